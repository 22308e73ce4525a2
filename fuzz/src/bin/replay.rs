//! Runs inputs through a target without any fuzzer: `replay TARGET PATH...`, where a
//! path is a file or a directory of files. A panic prints its message and location
//! (set RUST_BACKTRACE=1 for the stack) and the exit status is 101.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn inputs(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        out.extend(entries.into_iter().filter(|p| p.is_file()));
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, paths)) = args.split_first() else {
        eprintln!("usage: replay TARGET PATH...");
        return ExitCode::from(2);
    };
    let Some(target) = metron_fuzz::target(name) else {
        let names: Vec<&str> = metron_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("unknown target {name:?}; targets: {}", names.join(", "));
        return ExitCode::from(2);
    };
    let mut files = Vec::new();
    for path in paths {
        if let Err(e) = inputs(Path::new(path), &mut files) {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    }
    for file in &files {
        match std::fs::read(file) {
            Ok(data) => {
                eprintln!("{name}: {} ({} bytes)", file.display(), data.len());
                target(&data);
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    eprintln!("{name}: {} inputs, no panic", files.len());
    ExitCode::SUCCESS
}
