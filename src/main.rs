//! The `frontgate` binary: everything lives in [`frontgate::cli`].

fn main() -> std::process::ExitCode {
    frontgate::cli::main()
}
