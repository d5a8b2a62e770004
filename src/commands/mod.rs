//! One module per subcommand: each turns raw CLI values into a validated configuration,
//! runs the library, prints to the user, and returns the [`crate::exit::Exit`] code.

pub(crate) mod check;
pub(crate) mod docs;
pub(crate) mod emoji;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod sign;
pub(crate) mod undo;
