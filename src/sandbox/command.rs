//! `reactbatch sandbox`: run the emulator in the foreground until SIGINT/SIGTERM.
//!
//! Stdout carries what scripts read: first line exactly the base URL (flushed at once), then the
//! credentials — `export NAME=value` lines for generated ones, or a comment naming the
//! environment variable that was read (never its value). Everything else goes to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{window_count, Sandbox, SandboxConfig, SandboxHandle, KOMMO_DATE_WINDOW};
use crate::exit::Exit;
use crate::plan::{parse_duration, ProviderKind, Rate};
use crate::secret::Secret;

const KOMMO_ENV: &str = "KOMMO_CHANNEL_SECRET";
const OGMMA_ENV: &str = "OGMMA_API_KEY";

/// The examples, shared by `-h` and `--help` (a macro because `concat!` takes only literals).
macro_rules! examples {
    () => {
        "Examples:\n  \
            reactbatch sandbox\n  \
            reactbatch sandbox --listen 127.0.0.1:8080 --kommo-rate unlimited --ogmma-rate unlimited\n  \
            reactbatch sandbox --error-rate 0.1 --drop-rate 0.02 --latency 50ms --seed 42\n  \
            reactbatch sandbox --kommo-rate 7/s --burst 1 --retry-after 1 --request-log sandbox.jsonl\n  \
            reactbatch sandbox --not-found-prefix gone- --date-window 24h\n  \
            reactbatch sandbox --tls --cert-out sandbox-ca.pem"
    };
}

/// Flags of `reactbatch sandbox`.
#[derive(clap::Args, Debug)]
// The subcommand's one-line `about` comes from `cli.rs`; the details go after the options
// (a `long_about` here would be overridden by the variant's doc comment).
#[command(
    after_help = examples!(),
    after_long_help = concat!(
        "Serves Kommo `POST /v2/origin/custom/{scope_id}/react` and Ogmma \
        `POST /v1/channels/{channelId}/messages/react` as documented: checks Kommo signatures \
        (Content-Type, Date within 15 minutes, Content-MD5, X-Signature) and Ogmma bearer keys, \
        enforces rate limits with 429, keeps the reactions it was asked to make, and can inject \
        faults deterministically from --seed. Any scope id and channel id are accepted; an emoji \
        that is not exactly one emoji gets 400, as on the real services. --tls serves HTTPS \
        with a certificate generated at start (--cert-out writes its CA, PEM).\n\n\
        Stdout: the first line is the base URL (http://127.0.0.1:PORT, or https:// with --tls), \
        then the credentials. \
        KOMMO_CHANNEL_SECRET and OGMMA_API_KEY are used when set (only their names are printed); \
        otherwise they are generated and printed as `export` lines. --ogmma-keys N accepts N \
        Ogmma keys (OGMMA_API_KEY_2 … likewise), each limited on its own.\n\n\
        GET /_sandbox/stats shows requests by provider and status, faults injected and the \
        reaction count; GET /_sandbox/reactions the current reactions. 429s, 5xx and dropped \
        connections never change state, so a client's retry is always correct.\n\n\
        Runs until Ctrl-C (SIGINT) or SIGTERM, then exits 0.\n\n",
        examples!()
    )
)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port. Example: `--listen 127.0.0.1:8080`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Kommo limit per scope: `N/s`, `N/min`, `N/h` or `unlimited`. Example: `--kommo-rate 20/s`.
    #[arg(long, value_name = "RATE", default_value = "7/s", value_parser = Rate::parse)]
    pub kommo_rate: Rate,
    /// Ogmma limit per API key, as --kommo-rate. Example: `--ogmma-rate unlimited`.
    #[arg(long, value_name = "RATE", default_value = "60/min", value_parser = Rate::parse)]
    pub ogmma_rate: Rate,
    /// Ogmma API keys to accept, each limited on its own by --ogmma-rate (one per customer):
    /// the first is OGMMA_API_KEY, the others OGMMA_API_KEY_2 … OGMMA_API_KEY_N, each read
    /// from the environment when set, else generated and printed. Example: `--ogmma-keys 2`.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=super::MAX_OGMMA_KEYS as i64))]
    pub ogmma_keys: u8,
    /// Requests a key may send back to back before the rate applies (token bucket size)
    /// [default: the rate's count, e.g. 7 for 7/s]. Example: `--burst 1` for strict spacing.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: Option<u32>,
    /// Add `Retry-After: SECS` to 429 answers [default: no header, as Ogmma documents none].
    /// Example: `--retry-after 2`.
    #[arg(long, value_name = "SECS")]
    pub retry_after: Option<u64>,
    /// Fraction (0..1) of well-formed, authenticated requests answered 500/502/503 without any
    /// state change. Example: `--error-rate 0.1`.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = fraction)]
    pub error_rate: f64,
    /// Fraction (0..1) of well-formed, authenticated requests whose connection is closed with no
    /// answer and no state change. Example: `--drop-rate 0.02`.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = fraction)]
    pub drop_rate: f64,
    /// Delay added to every provider request before it is answered. Example: `--latency 50ms`.
    #[arg(long, value_name = "DUR", default_value = "0ms", value_parser = parse_duration)]
    pub latency: Duration,
    /// Seed of fault injection: the same seed gives the same faults for the same requests
    /// (per message, in order). Example: `--seed 42`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Message ids starting with P are answered 404 (message not found). Example:
    /// `--not-found-prefix gone-`.
    #[arg(long, value_name = "P")]
    pub not_found_prefix: Option<String>,
    /// Write one JSON line per request (time, provider, path, status, message id, latency; never
    /// secrets or signatures) to FILE. Example: `--request-log sandbox.jsonl`.
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,
    /// How far a Kommo Date may be from the sandbox clock [default: 15m, as documented]. Widen
    /// it to replay pre-signed requests in a benchmark. Example: `--date-window 24h`.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub date_window: Option<Duration>,
    /// Serve HTTPS with a certificate generated at start (signed by a CA generated with it);
    /// the first stdout line is then `https://127.0.0.1:PORT`.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: write the CA certificate (PEM) to FILE before the URL is printed, for
    /// clients' `--ca-cert FILE`. Example: `--tls --cert-out sandbox-ca.pem`.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cert_out: Option<PathBuf>,
}

fn fraction(text: &str) -> Result<f64, String> {
    let f: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number: expected a fraction like 0.05"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("`{text}` is not between 0 and 1"))
    }
}

/// A credential from the environment (non-empty), or a generated one.
fn credential(var: &str, prefix: &str) -> (Secret, bool) {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => (Secret::new(v), true),
        _ => (super::generate_secret(prefix), false),
    }
}

/// The environment variable of Ogmma key `n` (1-based): `OGMMA_API_KEY`, `OGMMA_API_KEY_2`, …
fn ogmma_var(n: usize) -> String {
    if n == 1 {
        OGMMA_ENV.to_string()
    } else {
        format!("{OGMMA_ENV}_{n}")
    }
}

/// Which credentials came from the environment (the rest were generated).
struct FromEnv {
    kommo: bool,
    /// One per Ogmma key, in order.
    ogmma: Vec<bool>,
}

fn config(args: &SandboxArgs) -> Result<(SandboxConfig, FromEnv), String> {
    if args.error_rate + args.drop_rate > 1.0 {
        return Err(format!(
            "--error-rate {} plus --drop-rate {} is more than 1",
            args.error_rate, args.drop_rate
        ));
    }
    let (kommo_secret, kommo_from_env) = credential(KOMMO_ENV, "");
    let (ogmma_keys, ogmma_from_env): (Vec<Secret>, Vec<bool>) = (1..=usize::from(args.ogmma_keys))
        .map(|n| credential(&ogmma_var(n), "sbx_"))
        .unzip();
    let mut config = SandboxConfig::new()
        .listen(args.listen)
        .kommo_secret(kommo_secret)
        .ogmma_keys(ogmma_keys)
        .kommo_rate(
            args.kommo_rate,
            args.burst.unwrap_or(window_count(args.kommo_rate)),
        )
        .ogmma_rate(
            args.ogmma_rate,
            args.burst.unwrap_or(window_count(args.ogmma_rate)),
        )
        .retry_after(args.retry_after.map(Duration::from_secs))
        .error_rate(args.error_rate)
        .drop_rate(args.drop_rate)
        .latency(args.latency)
        .seed(args.seed)
        .date_window(args.date_window.unwrap_or(KOMMO_DATE_WINDOW))
        .tls(args.tls);
    if let Some(prefix) = &args.not_found_prefix {
        config = config.not_found_prefix(prefix.clone());
    }
    if let Some(path) = &args.request_log {
        config = config.request_log(path.clone());
    }
    Ok((
        config,
        FromEnv {
            kommo: kommo_from_env,
            ogmma: ogmma_from_env,
        },
    ))
}

pub fn run_command(args: SandboxArgs) -> Exit {
    let (config, from_env) = match config(&args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("reactbatch sandbox: {message}");
            return Exit::Invalid;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crate::signals::block_sigpipe_in_thread)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reactbatch sandbox: cannot start the async runtime: {e}");
            return Exit::Invalid;
        }
    };
    runtime.block_on(async {
        let sandbox = match Sandbox::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("reactbatch sandbox: cannot start on {}: {e}", args.listen);
                return Exit::Invalid;
            }
        };
        if let (Some(path), Some(pem)) = (&args.cert_out, sandbox.ca_pem()) {
            // Before the URL: a script that waits for the URL can then read the file.
            if let Err(e) = std::fs::write(path, pem) {
                eprintln!(
                    "reactbatch sandbox: cannot write the certificate to {}: {e}",
                    path.display()
                );
                return Exit::Invalid;
            }
        }
        announce(&sandbox, &from_env, &args);
        wait_for_signal().await;
        eprintln!("reactbatch sandbox: stopping");
        sandbox.shutdown().await;
        Exit::Success
    })
}

fn announce(sandbox: &SandboxHandle, from_env: &FromEnv, args: &SandboxArgs) {
    let mut out = std::io::stdout().lock();
    // The URL first and flushed on its own: a script may be waiting on this one line.
    let _ = writeln!(out, "{}", sandbox.base_url());
    let _ = out.flush();
    let kommo = (
        KOMMO_ENV.to_string(),
        ProviderKind::Kommo,
        from_env.kommo,
        sandbox.kommo_secret(),
    );
    let ogmma = sandbox
        .ogmma_keys()
        .iter()
        .zip(&from_env.ogmma)
        .enumerate()
        .map(|(i, (key, &env))| (ogmma_var(i + 1), ProviderKind::Ogmma, env, key));
    for (var, provider, from_env, secret) in std::iter::once(kommo).chain(ogmma) {
        let _ = if from_env {
            writeln!(out, "# {provider}: using {var} from the environment")
        } else {
            writeln!(out, "export {var}={}", secret.expose())
        };
    }
    let _ = out.flush();
    drop(out);

    let faults = if args.error_rate > 0.0 || args.drop_rate > 0.0 || !args.latency.is_zero() {
        format!(
            "errors {}, drops {}, latency {:?}, seed {}",
            args.error_rate, args.drop_rate, args.latency, args.seed
        )
    } else {
        "none".to_string()
    };
    let burst = args
        .burst
        .map_or_else(|| "one window".to_string(), |b| b.to_string());
    eprintln!(
        "reactbatch sandbox: listening on {} — Kommo {}, Ogmma {} (burst {burst}); faults: {faults}\n  \
         POST {}/v2/origin/custom/{{scope_id}}/react\n  \
         POST {}/v1/channels/{{channelId}}/messages/react\n  \
         GET  {}/_sandbox/stats   GET {}/_sandbox/reactions\n\
         Ctrl-C to stop.",
        sandbox.addr(),
        args.kommo_rate,
        args.ogmma_rate,
        sandbox.base_url(),
        sandbox.base_url(),
        sandbox.base_url(),
        sandbox.base_url(),
    );
}

async fn wait_for_signal() {
    match crate::signals::Signals::new() {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
