//! Command-line surface (clap types, kept raw). Commands turn these into validated
//! configurations; a bad value is a usage error (exit 2) reported before anything is sent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The version `--version` prints: the crate version, and the git commit when built from a
/// checkout (see `build.rs`), e.g. `0.1.0 (1a2b3c4)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), env!("REACTBATCH_VERSION_SUFFIX"));

#[derive(Parser, Debug)]
#[command(
    name = "reactbatch",
    version = VERSION,
    about = "Apply emoji reactions to chat messages in bulk (Kommo, Ogmma)",
    long_about = "Apply emoji reactions to chat messages in bulk.\n\n\
        A plan (YAML workflow or CSV rows) lists message ids, emojis and actions; reactbatch signs \
        and sends each request under a per-target rate limit and writes a per-row report.",
    after_help = MAIN_EXAMPLES,
    after_long_help = with_reference(MAIN_EXAMPLES)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour diagnostics: `auto` colours a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    pub color: crate::diagnostic::ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and lint plans; sends nothing.
    Check(CheckArgs),
    /// Execute a plan (or --dry-run it) and write the report.
    Run(Box<RunArgs>),
    /// Sign a request by hand and print its headers.
    Sign(SignArgs),
    /// Write the inverse plan of the rows a report shows done.
    Undo(UndoArgs),
    /// Make the HTML page of a run from its report (and summary JSON).
    #[command(
        after_help = "Example:\n  reactbatch report plan.report.csv --summary-json summary.json --html run.html"
    )]
    Report(ReportArgs),
    /// Run the local emulator of both providers' APIs.
    Sandbox(crate::sandbox::SandboxArgs),
    /// List the emojis SEARCH likely means, then those whose name or shortcode contains it, with
    /// their `:shortcodes:`.
    #[command(
        after_help = "Examples:\n  reactbatch emoji thumbs\n  reactbatch emoji :tada:\n  reactbatch emoji heart | head"
    )]
    Emoji(EmojiArgs),
    /// Print the JSON Schema of the plan format (for editors).
    #[command(
        after_help = "Examples:\n  reactbatch schema > plan.schema.json\n  then, as the first line of a plan next to it:\n  # yaml-language-server: $schema=./plan.schema.json"
    )]
    Schema,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  reactbatch completions bash > ~/.local/share/bash-completion/completions/reactbatch\n  reactbatch completions zsh > ~/.zfunc/_reactbatch\n  reactbatch completions fish > ~/.config/fish/completions/reactbatch.fish"
    )]
    Completions(CompletionsArgs),
    /// Print a man page (roff), or write every page to a directory.
    #[command(
        after_help = "Examples:\n  reactbatch man run | man -l -\n  reactbatch man --out ~/.local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The subcommand whose page to print (`run` prints reactbatch-run(1)) [default: the main
    /// page, reactbatch(1)].
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Write the pages to DIR instead (`reactbatch.1`, `reactbatch-run.1`, ...: all of them, or
    /// COMMAND's alone), creating DIR if needed.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

const MAIN_EXAMPLES: &str = "Examples:\n  reactbatch check plan.yaml\n  reactbatch run plan.yaml --dry-run --emit requests.jsonl\n  reactbatch run examples/workflows/quickstart.yaml --sandbox";

const RUN_EXAMPLES: &str = "Examples:\n  reactbatch run plan.yaml --dry-run --now 2026-12-01T09:00:00Z --emit requests.jsonl\n  reactbatch run plan.yaml --report out.jsonl --rate 5/s --concurrency 8\n  reactbatch run examples/workflows/quickstart.yaml --sandbox";

/// The exit codes scripts may rely on, with what each means. `--help` (of `reactbatch` and
/// `run`) and every man page's EXIT STATUS section are both written from this table.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "every row ok, planned, skipped or deferred (check: no errors)",
    ),
    (1, "some row failed or was cancelled"),
    (2, "invalid plan or usage; nothing was sent"),
    (3, "a target was stopped on authentication failure"),
    (4, "the --lock file is held by another run"),
    (5, "an origin was unreachable (its targets were stopped)"),
    (74, "the report could not be written (sending stopped)"),
    (130, "interrupted (SIGINT)"),
    (143, "terminated (SIGTERM)"),
];

/// Which code wins when several apply.
pub const EXIT_PRECEDENCE: &str = "When several apply, the first of 130/143, 74, 3, 5, 1 wins.";

/// The environment variables reactbatch reads, with what for: `--help` and every man page's
/// ENVIRONMENT section are both written from this table.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "NAME of `{ env: NAME }`",
        "a plan's secrets (`secret:`, `api_key:`) are read from the variables the plan names",
    ),
    ("VAR of `sign --secret-env VAR`", "the channel secret `sign` signs with"),
    (
        "KOMMO_CHANNEL_SECRET, OGMMA_API_KEY",
        "the names the examples' plans use; `sandbox` takes its credentials from them when set",
    ),
    (
        "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
        "a proxy for hosts other than loopback (lower-case names too); the sandbox is never proxied",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "CA certificates to trust instead of the system store's (see also --ca-cert)",
    ),
    ("NO_COLOR", "set and not empty: no colour under `--color auto`"),
];

/// The exit status and environment reference, as `--help` shows it after the examples.
pub fn reference_text() -> String {
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in EXIT_STATUS {
        text.push_str(&format!("  {code:<4}{meaning}\n"));
    }
    text.push_str(&format!("  {EXIT_PRECEDENCE}\n\nEnvironment:\n"));
    for (name, meaning) in ENVIRONMENT {
        text.push_str(&format!("  {name}\n      {meaning}\n"));
    }
    text
}

/// `examples`, then [`reference_text`]: the `--help` (long help) of commands whose exit codes
/// and environment matter to scripts. `-h` shows the examples alone.
pub fn with_reference(examples: &str) -> String {
    format!("{examples}\n\n{}", reference_text())
}

#[derive(Args, Debug)]
pub struct EmojiArgs {
    /// Words to look for in emoji names and shortcodes, or an emoji or `:shortcode:` itself.
    #[arg(required = true, value_name = "SEARCH")]
    pub search: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reactbatch check plan.yaml\n  reactbatch check rows.csv --targets targets.yaml\n  reactbatch check plan.yaml --format json | jq '.plans[].problems[]'"
)]
pub struct CheckArgs {
    /// Plan files: `.yaml`/`.yml` workflows or `.csv` rows (CSV needs --targets).
    #[arg(required = true, value_name = "PLAN")]
    pub plans: Vec<PathBuf>,
    /// A YAML file holding only `targets:`, for CSV plans.
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// Output format: `human` (stderr) or `json` (one document on stdout, for editors and CI).
    #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
    pub format: CheckFormat,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Diagnostics with source lines on stderr, and a summary line per plan.
    #[default]
    Human,
    /// One JSON document on stdout: problems with file, line, column, severity, message, hint.
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitFormatArg {
    /// One JSON object a line: row, attempt, method, url, headers, body.
    Jsonl,
    /// Runnable curl commands; secrets as $VAR references.
    Curl,
}

#[derive(Args, Debug, Default)]
#[command(after_help = RUN_EXAMPLES, after_long_help = with_reference(RUN_EXAMPLES))]
pub struct RunArgs {
    /// The plan: a `.yaml`/`.yml` workflow or a `.csv` of rows (CSV needs --targets).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// A YAML file holding only `targets:`, for CSV plans.
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// Report file [default: <plan-stem>.report.csv]; a `.jsonl` ending writes JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Build and sign every request, send none; rows get status `planned`.
    #[arg(long)]
    pub dry_run: bool,
    /// Write every signed request as it is sent (or would be), secrets redacted.
    #[arg(long, value_name = "FILE")]
    pub emit: Option<PathBuf>,
    /// Format of --emit [default: from its extension: `.sh` curl, anything else jsonl].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub emit_format: Option<EmitFormatArg>,
    /// Per-target rate: `7/s`, `60/min`, or `unlimited` (sandbox rehearsals).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<String>,
    /// Requests allowed ahead of the even schedule [default: 1].
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Requests in flight at once, across the whole run [default: 64].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Retries after the first attempt for 429, 5xx, timeouts and connection errors [default: 5].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Per-attempt timeout, e.g. `10s`, `500ms` [default: 10s].
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// How long a row may keep being answered 429 (rate limited) before it fails; 429s do not
    /// use up --retries [default: 15m].
    #[arg(long, value_name = "DUR")]
    pub rate_limit_budget: Option<String>,
    /// Skip rows that REPORT shows done (may be the same file as --report).
    #[arg(long, value_name = "REPORT")]
    pub resume: Option<PathBuf>,
    /// With --resume: also run rows whose earlier result was a final failure (400, 404, ...).
    #[arg(long)]
    pub retry_failed: bool,
    /// Replace a report that holds live results, without resuming from it.
    #[arg(long)]
    pub overwrite: bool,
    /// Refuse to start while another run holds FILE.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Run only shard I of N (partitioned by target and message).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Clock for `not_before` and for signing in --dry-run (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Start the emulator in-process and point every target at it, with its own credentials.
    #[arg(long)]
    pub sandbox: bool,
    /// With --sandbox: serve it over HTTPS (a certificate generated at start, trusted by this
    /// run only).
    #[arg(long, requires = "sandbox")]
    pub tls: bool,
    /// PEM file of CA certificates to trust for HTTPS, in addition to the system store and the
    /// bundled roots (a private or corporate CA).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// No progress bar or status lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Only what needs a human: failed rows, stopped targets and the summary line, when the exit code is not 0.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also write the end-of-run summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Also write the run as one self-contained HTML page to FILE (at the end of every run).
    #[arg(long, value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Live runs: write the run's gauges for node_exporter's textfile collector to FILE
    /// (replaced atomically at the end): rows by status, requests, 429s, duration, exit code,
    /// end time, and `reactbatch_last_success_timestamp_seconds`, which a failed run carries
    /// over (0 until a run succeeds). Label `plan`: the plan file's stem.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Live runs: ping a healthchecks-style URL: URL/start when sending starts, URL/<exit
    /// code> at the end with the summary's first line; URL/<exit code> alone when the run is
    /// refused before sending (2: invalid plan). A failed or slow (>5s) ping is a warning only;
    /// the URL is printed as scheme://host/… only.
    #[arg(long, value_name = "URL")]
    pub ping: Option<String>,
    /// Refuse to run unless the plan's digest (printed by --dry-run) is HASH.
    #[arg(long, value_name = "HASH")]
    pub expect_digest: Option<String>,
    /// Allow plain http:// base URLs to hosts other than loopback (credentials unencrypted).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// stderr format: `text` (timestamped progress and summary when not a terminal) or `json`
    /// (one object per line: ts, level, event, fields; for log shippers).
    #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
    pub log_format: crate::outputs::log::LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SignProvider {
    Kommo,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  printf '%s' '{\"type\":\"react\"}' | KOMMO_CHANNEL_SECRET=... reactbatch sign kommo \\\n    --secret-env KOMMO_CHANNEL_SECRET --path /v2/origin/custom/SCOPE/react \\\n    --date 'Wed, 15 Dec 2021 23:12:55 +0000' -v -"
)]
pub struct SignArgs {
    /// Provider whose signature scheme to use.
    #[arg(value_enum)]
    pub provider: SignProvider,
    /// Environment variable holding the channel secret.
    #[arg(long, value_name = "VAR")]
    pub secret_env: String,
    /// Request path, without scheme or host (a query is not signed).
    #[arg(long, value_name = "P")]
    pub path: String,
    /// The Date header value, signed verbatim (a warning if it is not RFC 2822 or its weekday
    /// is wrong) [default: now, printed as a `Date:` line].
    #[arg(long, value_name = "D")]
    pub date: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Also print the exact string that was signed.
    #[arg(short, long)]
    pub verbose: bool,
    /// Body file; `-` or nothing reads standard input.
    #[arg(value_name = "BODY_FILE")]
    pub body: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  reactbatch undo plan.report.csv --plan plan.yaml -o plan.undo.yaml"
)]
pub struct UndoArgs {
    /// A report written by `reactbatch run`.
    #[arg(value_name = "REPORT")]
    pub report: PathBuf,
    /// The plan that report came from (targets are taken from it).
    #[arg(long, value_name = "PLAN")]
    pub plan: PathBuf,
    /// Where to write the inverse plan [default: standard output]. An existing file is not
    /// replaced unless --force.
    #[arg(short, long, value_name = "PLAN_OUT")]
    pub output: Option<PathBuf>,
    /// Replace an existing -o PLAN_OUT.
    #[arg(long, requires = "output")]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A report written by `reactbatch run` (CSV or JSON Lines).
    #[arg(value_name = "REPORT")]
    pub report: PathBuf,
    /// The run's `--summary-json` file: with it the page draws each lane's requests per
    /// second against its limit, 429s and retries.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Where to write the page.
    #[arg(long, value_name = "OUT")]
    pub html: PathBuf,
}
