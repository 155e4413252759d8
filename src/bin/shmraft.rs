fn main() -> std::process::ExitCode {
    shmraft_tools::shmraft_main()
}
