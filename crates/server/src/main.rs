//! The `chat-server` binary: read settings, start, stop on SIGTERM/SIGINT.

use std::process::ExitCode;

use chat_server::{Application, Settings, Tool, mint_token, shutdown, telemetry};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    if let Some(Tool::Token(args)) = &settings.tool {
        return match mint_token(&settings, args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("chat-server token: {error}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(settings.log_format);
    let mut signals = match shutdown::StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!("chat-server cannot catch SIGTERM/SIGINT: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("chat-server cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let stop = app.shutdown_handle();
    tokio::spawn(async move {
        let received = signals.recv().await;
        stop.trigger();
        tracing::info!(signal = received.as_str(), "stop signal received");
    });
    app.run_until_stopped().await;
    ExitCode::SUCCESS
}
