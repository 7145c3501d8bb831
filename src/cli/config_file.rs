//! `medledger serve --config FILE`: an optional TOML file as the lowest layer of settings.
//!
//! Precedence is flags, then environment variables, then the file, then defaults. The
//! file is applied before the command line is parsed, by setting the environment
//! variable of each key the environment does not already set; clap then reads flags
//! over environment as usual. So one table (the `serve` arguments, each with its
//! `MEDLEDGER_*` variable) documents every knob in `--help`, and the file cannot name a
//! knob that does not exist: an unknown key is an error that lists the known ones.
//!
//! Keys are the long flag names, with `_` or `-`: `listen = "127.0.0.1:8080"`,
//! `batch_timeout_ms = 10`, `ipfs_upload_concurrency = 4`.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "MEDLEDGER_CONFIG";
/// A config file larger than this is refused.
const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

/// The config file named by `args` (`--config F` or `--config=F`) or by
/// `MEDLEDGER_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let text = a.to_string_lossy();
        if text == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// What the file sets: `(environment variable, value)` for each key, in file order.
/// `cmd` is the subcommand whose arguments the keys name.
pub fn settings(cmd: &clap::Command, text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
    let known = || {
        cmd.get_arguments()
            .filter(|a| a.get_env().is_some())
            .filter_map(|a| a.get_long())
            .map(|l| l.replace('-', "_"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let env = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .and_then(|a| a.get_env())
            .ok_or_else(|| format!("unknown key `{key}`; known keys: {}", known()))?;
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => return Err(format!("`{key}` must be a string, a number or a boolean")),
        };
        out.push((env.to_string_lossy().into_owned(), value));
    }
    Ok(out)
}

/// Reads the config file (if any) and sets the environment variable of every key the
/// environment does not set already. Returns the file applied. Call it before any
/// thread starts (it changes the process environment).
pub fn apply(cmd: &clap::Command, args: &[OsString]) -> Result<Option<PathBuf>, String> {
    let Some(path) = config_path(args) else {
        return Ok(None);
    };
    let shown = path.display();
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("config file {shown}: {e}"))?
        .len();
    if len > CONFIG_BYTES_MAX {
        return Err(format!(
            "config file {shown} is {len} bytes; the limit is {CONFIG_BYTES_MAX}"
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config file {shown}: {e}"))?;
    for (env, value) in settings(cmd, &text).map_err(|e| format!("config file {shown}: {e}"))? {
        if std::env::var_os(&env).is_none() {
            std::env::set_var(&env, value);
        }
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Arg;

    fn cmd() -> clap::Command {
        clap::Command::new("serve")
            .arg(Arg::new("listen").long("listen").env("MEDLEDGER_LISTEN"))
            .arg(
                Arg::new("batch")
                    .long("batch-timeout-ms")
                    .env("MEDLEDGER_BATCH_TIMEOUT_MS"),
            )
            .arg(Arg::new("config").long("config"))
    }

    #[test]
    fn keys_map_to_their_environment_variables() {
        let got = settings(
            &cmd(),
            "listen = \"127.0.0.1:9000\"\nbatch_timeout_ms = 25\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("MEDLEDGER_BATCH_TIMEOUT_MS".to_string(), "25".to_string()),
                ("MEDLEDGER_LISTEN".to_string(), "127.0.0.1:9000".to_string()),
            ]
        );
        // The flag's own spelling works too.
        let got = settings(&cmd(), "batch-timeout-ms = 5").unwrap();
        assert_eq!(got[0].1, "5");
    }

    #[test]
    fn unknown_keys_nested_values_and_bad_toml_are_errors() {
        let e = settings(&cmd(), "lisen = \"x\"").unwrap_err();
        assert!(
            e.contains("unknown key `lisen`") && e.contains("batch_timeout_ms"),
            "{e}"
        );
        // `config` has no environment variable: it cannot name itself.
        assert!(settings(&cmd(), "config = \"x\"").is_err());
        let e = settings(&cmd(), "listen = [1]").unwrap_err();
        assert!(e.contains("must be a string"), "{e}");
        assert!(settings(&cmd(), "listen = ").unwrap_err().contains("TOML"));
    }

    #[test]
    fn the_path_comes_from_the_flag_in_either_spelling() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["medledger", "serve", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["medledger", "serve", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
