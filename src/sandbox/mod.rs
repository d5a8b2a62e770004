//! The local emulator of both providers' APIs.

use crate::exit::Exit;

/// Flags of `reactbatch sandbox`.
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {}

pub fn run_command(_args: SandboxArgs) -> Exit {
    Exit::Invalid
}
