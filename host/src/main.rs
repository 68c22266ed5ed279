//! The `membrane` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    membrane::cli::main()
}
