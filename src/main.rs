use clap::Parser;
use secret_injector::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// glibc's malloc raises its trim threshold to twice the largest mmap'ed block it frees (up to
/// 64 MiB). The initial lists of the watches free such blocks, so afterwards the free top of
/// the heap was never returned and the index at rest looked ~15% larger in RSS (10,000
/// tracked Secrets against the stand-in API: 25 → 22 MiB of anonymous memory; idle unchanged).
/// Setting the threshold to glibc's own default keeps it there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: mallopt only sets a malloc parameter; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            secret_injector::telemetry::init_tracing(args.log_format, &args.log);
            Ok(secret_injector::app::run(*args).await?)
        }
        Command::Certs(args) => Ok(secret_injector::certs::run(&args)?),
        Command::Render(args) => std::process::exit(secret_injector::render::run(&args)),
        Command::Crds => {
            print!("{}", secret_injector::store::crd::crds_yaml()?);
            Ok(())
        }
    }
}
