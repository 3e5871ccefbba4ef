use clap::Parser;
use secret_injector::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
