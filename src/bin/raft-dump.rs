fn main() -> std::process::ExitCode {
    shmraft_tools::raft_dump_main()
}
