//! The AFL++ entry point: `afl TARGET` fuzzes one of [`metron_fuzz::TARGETS`] in
//! persistent mode (see fuzz/README.md). Run outside `afl-fuzz`, it reads one input
//! from standard input and runs it once, which is how a crash is reproduced.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = metron_fuzz::target(&name) else {
        let names: Vec<&str> = metron_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "usage: afl TARGET < input; TARGET is one of: {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz(true, target);
}
