//! The `accord` binary.

fn main() -> std::process::ExitCode {
    accord::cli::main()
}
