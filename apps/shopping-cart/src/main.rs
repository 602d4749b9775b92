//! `shopping-cart`: seed 000's shopping cart on Shoal. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use shopping_cart::{Args, init_tracing, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    match run(args.config()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
