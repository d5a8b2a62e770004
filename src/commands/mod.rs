//! One module per subcommand: each turns raw CLI values into a validated configuration,
//! runs the library, prints to the user, and returns the [`crate::exit::Exit`] code.

pub mod check;
pub mod docs;
pub mod emoji;
pub mod report;
pub mod run;
pub mod sign;
pub mod undo;
