//! What every command shares: finding the configuration, opening the store, output
//! modes, and turning errors into one line and an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockstore::{BackendKind, BlockStore, Config, Error, ErrorKind};

/// Stop without a word and exit 0 (the reader of our output went away).
pub const EXIT_QUIET: u8 = 0;
/// The store or the system failed.
pub const EXIT_FAILURE: u8 = 1;
/// Bad arguments, key, range or configuration.
pub const EXIT_INVALID: u8 = 2;
/// No such block, or no store where the configuration points.
pub const EXIT_NOT_FOUND: u8 = 3;

/// How results are printed.
pub struct Output {
    pub quiet: bool,
    pub json: bool,
}

impl Output {
    /// Prints a line of human-readable information, unless quiet or JSON.
    pub fn info(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            println!("{}", line.as_ref());
        }
    }

    /// Whether progress bars may be drawn.
    pub fn progress(&self) -> bool {
        !self.quiet && !self.json
    }
}

/// A failed command: the line for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_INVALID,
            message: message.into(),
        }
    }

    pub fn io(what: &str, e: std::io::Error) -> Failure {
        // A reader that went away (`blockstore get … | head`) is not a failure: stop
        // quietly, as `cat` does.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure {
                code: EXIT_QUIET,
                message: String::new(),
            };
        }
        Failure {
            code: EXIT_FAILURE,
            message: format!("{what}: {e}"),
        }
    }

    /// `{command} {key}: {what went wrong}`, with the code for the error's kind.
    pub fn store(command: &str, key: &str, e: &Error) -> Failure {
        // Without a key of the command's own, the one the error names (a path at open).
        let key = if key.is_empty() {
            e.key().unwrap_or_default()
        } else {
            key
        };
        let code = match e.kind() {
            ErrorKind::NotFound => EXIT_NOT_FOUND,
            ErrorKind::InvalidKey
            | ErrorKind::InvalidRange
            | ErrorKind::BlockTooLarge
            | ErrorKind::Config => EXIT_INVALID,
            _ => EXIT_FAILURE,
        };
        let mut message = if key.is_empty() || e.kind() == ErrorKind::InvalidKey {
            format!("{command}: {}", e.kind())
        } else {
            format!("{command} {}: {}", shown(key), e.kind())
        };
        if let Some(detail) = e.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        // An invalid key comes after the rule it broke, as the store shows it:
        // escaped and cut short.
        if e.kind() == ErrorKind::InvalidKey {
            message.push_str(": ");
            message.push_str(e.key().unwrap_or_default());
        }
        if let Some(source) = std::error::Error::source(e) {
            message.push_str(&format!(" ({source})"));
        }
        Failure { code, message }
    }
}

/// A key as a message may show it: control characters escaped.
pub fn shown(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.chars().flat_map(char::escape_debug).collect()
    } else {
        key.to_owned()
    }
}

/// Set by `-q`: warnings of ours stay off stderr too.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A warning on stderr, unless `-q`.
pub fn warn(line: impl AsRef<str>) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("blockstore: warning: {}", line.as_ref());
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::io("output", e)
    }
}

/// The default store: the filesystem backend in `./blockstore-data`.
pub const DEFAULT_DIR: &str = "blockstore-data";

/// The configuration: `--config`, else `$BLOCKSTORE_CONFIG`, else the default store.
pub fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    let path: Option<PathBuf> = path.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("BLOCKSTORE_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match path {
        Some(path) => Config::load(&path).map_err(|e| Failure {
            code: EXIT_INVALID,
            message: e.to_string(),
        }),
        None => Ok(Config::filesystem(DEFAULT_DIR)),
    }
}

/// Whether a command may create the filesystem store it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Make the base directory when it is missing (commands that write).
    IfMissing,
    /// A missing store is "no store there" (commands that only read).
    Never,
}

/// Opens the configured store; with [`Create::Never`] a filesystem store that does not
/// exist is reported as "no store there" instead of being created.
pub fn open(config: &Config, create: Create) -> Result<Arc<dyn BlockStore>, Failure> {
    let mut config = config.clone();
    if config.block_store.backend == BackendKind::Memory {
        warn("the memory store lives only as long as this command: nothing it holds is kept");
    }
    // A relative base_path is relative to the directory the command runs in; messages
    // show where that is.
    if let Some(fs) = config.block_store.filesystem.as_mut() {
        if fs.base_path.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                fs.base_path = cwd.join(&fs.base_path);
            }
        }
    }
    if let (Create::Never, BackendKind::Filesystem, Some(fs)) = (
        create,
        config.block_store.backend,
        config.block_store.filesystem.as_mut(),
    ) {
        if !fs.base_path.exists() {
            return Err(Failure {
                code: EXIT_NOT_FOUND,
                message: format!("no store at {}", fs.base_path.display()),
            });
        }
        fs.create_dir = false;
    }
    blockstore::open(&config).map_err(|e| Failure::store("open", "", &e))
}

/// Loads the configuration and opens its store.
pub fn open_store(path: Option<&Path>, create: Create) -> Result<Arc<dyn BlockStore>, Failure> {
    open(&load_config(path)?, create)
}

/// Parses sizes such as `4096`, `64K`, `1M`, `4MiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: usize = number.parse().map_err(|_| format!("not a size: {text}"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => return Err(format!("unknown size unit {other:?} in {text}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size too large: {text}"))
}

/// A byte count for people: `4.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A spinner on stderr with a message and bytes per second, when progress may be
/// drawn and stderr is a terminal; else a hidden bar.
pub fn byte_spinner(out: &Output) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    if !out.progress() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {binary_bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}
