//! `patchd completions` and `patchd man` as a user meets them: scripts each shell accepts and
//! that complete every subcommand, a man page per subcommand, and errors that say what is wrong.
//!
//! The subcommands are read from `patchd --help` (and each one's `--help`), so a new
//! subcommand without completions or a page fails here without editing this file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn patchd(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.args(args);
    for var in ["PATCHD_CONFIG", "PATCHD_DATABASE_URL", "PATCHD_ENDPOINT_URL", "PATCHD_LOG"] {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The names listed under `Commands:` in `patchd ARGS --help`, without clap's `help`.
fn commands_in_help(args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.push("--help");
    let out = patchd(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let Some(start) = text.find("\nCommands:\n") else { return Vec::new() };
    text[start + "\nCommands:\n".len()..]
        .lines()
        .take_while(|line| !line.trim().is_empty())
        // A name is indented by two spaces; a wrapped description by more.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every subcommand as its path of names (`["db", "status"]`), nested ones included.
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(prefix: &[String], paths: &mut Vec<Vec<String>>) {
        let args: Vec<&str> = prefix.iter().map(String::as_str).collect();
        for name in commands_in_help(&args) {
            let mut path = prefix.to_vec();
            path.push(name);
            paths.push(path.clone());
            walk(&path, paths);
        }
    }
    let mut paths = Vec::new();
    walk(&[], &mut paths);
    paths
}

fn top_level() -> Vec<String> {
    let names = commands_in_help(&[]);
    // Guards the parsing above: if --help's layout changed, the tests below would check nothing.
    for expected in ["check", "report", "db", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not found in --help: {names:?}");
    }
    names
}

/// `word` occurs in `text` delimited by characters that cannot be part of a command name.
fn mentions(text: &str, word: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// A directory under the system's temporary directory, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-completions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn script(shell: &str) -> String {
    let out = patchd(&["completions", shell]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "completions {shell} wrote on stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.trim().is_empty(), "empty {shell} script");
    for name in top_level() {
        assert!(mentions(&text, &name), "the {shell} script does not mention `{name}`");
    }
    text
}

/// The shell, if it is installed; otherwise says why the check is skipped.
fn shell_available(shell: &str) -> bool {
    let found = Command::new(shell).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `{shell}` is not installed, so its script's syntax is not checked");
    }
    found
}

/// Runs `shell ARGS FILE` on the script saved to a file; the shell must accept it.
fn shell_accepts(shell: &str, args: &[&str], text: &str) {
    let dir = Scratch::new(shell);
    let file = dir.path().join(format!("patchd.{shell}"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(shell).args(args).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{shell} {args:?} rejects the script: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_script_is_valid_and_completes_every_subcommand() {
    let text = script("bash");
    assert!(shell_available("bash"), "bash is needed for this test");
    shell_accepts("bash", &["-n"], &text);

    // What a user gets pressing TAB after `patchd `, then after `patchd db `: the function the
    // script registers, called as bash's programmable completion calls it.
    let complete = |words: &str| -> Vec<String> {
        let dir = Scratch::new("bash-run");
        let file = dir.path().join("patchd.bash");
        std::fs::write(&file, &text).unwrap();
        let driver = format!(
            "source {file}\nCOMP_WORDS=({words})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
             COMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
             func=$(complete -p patchd | sed -E 's/.*-F ([^ ]+).*/\\1/')\n\
             \"$func\" patchd \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            file = file.display()
        );
        let out = Command::new("bash").arg("-c").arg(driver).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
    };
    let offered = complete("patchd ''");
    for name in top_level() {
        assert!(offered.contains(&name), "`patchd <TAB>` does not offer {name}: {offered:?}");
    }
    for path in subcommand_paths().iter().filter(|p| p.len() == 2) {
        let offered = complete(&format!("patchd {} ''", path[0]));
        assert!(
            offered.contains(&path[1]),
            "`patchd {} <TAB>` does not offer {}: {offered:?}",
            path[0],
            path[1]
        );
    }
    let shells: Vec<String> =
        complete("patchd completions ''").into_iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(shells, ["bash", "zsh", "fish"]);
    assert_eq!(complete("patchd completions f"), ["fish"]);
}

#[test]
fn zsh_script_is_valid() {
    let text = script("zsh");
    assert!(text.starts_with("#compdef patchd"), "zsh needs #compdef first:\n{}", &text[..80]);
    if shell_available("zsh") {
        shell_accepts("zsh", &["-n"], &text);
    }
}

#[test]
fn fish_script_is_valid() {
    let text = script("fish");
    if !shell_available("fish") {
        return;
    }
    shell_accepts("fish", &["--no-execute"], &text);
    // What fish offers after `patchd ` and after each subcommand that has subcommands.
    let dir = Scratch::new("fish-run");
    let file = dir.path().join("patchd.fish");
    std::fs::write(&file, &text).unwrap();
    let complete = |line: &str| -> Vec<String> {
        let command = format!("source {}; complete -C '{line}'", file.display());
        let out = Command::new("fish").arg("-c").arg(command).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        // One candidate a line, then a tab and its description.
        text.lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect()
    };
    let offered = complete("patchd ");
    for name in top_level() {
        assert!(offered.contains(&name), "`patchd <TAB>` does not offer {name}: {offered:?}");
    }
    for path in subcommand_paths().iter().filter(|p| p.len() == 2) {
        let offered = complete(&format!("patchd {} ", path[0]));
        assert!(
            offered.contains(&path[1]),
            "`patchd {} <TAB>` does not offer {}: {offered:?}",
            path[0],
            path[1]
        );
    }
}

#[test]
fn completions_help_says_where_to_install_each_script() {
    let text = stdout(&patchd(&["completions", "--help"]));
    for needle in [
        "/usr/share/bash-completion/completions/patchd",
        "$fpath",
        "_patchd",
        "~/.config/fish/completions/patchd.fish",
    ] {
        assert!(text.contains(needle), "completions --help lacks {needle}:\n{text}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = patchd(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(err.contains("[possible values: bash, zsh, fish]"), "{err}");
}

#[test]
fn man_writes_a_page_for_every_subcommand() {
    let dir = Scratch::new("man");
    let out = patchd(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&out);

    let mut expected = vec!["patchd".to_owned()];
    expected.extend(subcommand_paths().iter().map(|path| format!("patchd-{}", path.join("-"))));
    assert!(expected.contains(&"patchd-db-status".to_owned()), "nested subcommands: {expected:?}");
    for page in &expected {
        let file = dir.path().join(format!("{page}.1"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // roff's preamble (a portable apostrophe) comes first; the page's first request is .TH.
        let first = text.lines().find(|line| !line.starts_with(".ie ") && !line.starts_with(".el "));
        let th = format!(".TH {page} 1 ");
        assert!(first.is_some_and(|l| l.starts_with(&th)), "{page}.1 does not start with `{th}`:\n{text}");
        assert!(text.contains(".SH NAME"), "{page}.1 has no NAME section");
        assert!(mentions(&listed, &file.display().to_string()), "{} not listed:\n{listed}", file.display());
    }
    let written = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(written, expected.len(), "pages: {listed}");
    assert!(!dir.path().join("patchd-help.1").exists());
}

#[test]
fn man_refuses_a_directory_that_does_not_exist() {
    let dir = Scratch::new("man-missing");
    let missing = dir.path().join("no-such-dir");
    let out = patchd(&["man", "--out", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "man created {}", missing.display());
    assert!(stdout(&out).is_empty());

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = patchd(&["man", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a directory"), "{}", stderr(&out));
}

#[test]
fn man_out_is_required() {
    let out = patchd(&["man"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--out <DIR>"), "{}", stderr(&out));
}
