//! `bench-report`: the steps of `bench/run` that handle data. `sample` turns one tool run's
//! output into a line of the samples file; `machine` and `profile` describe the machine and
//! a perf profile; `assemble` folds everything into `bench/results/<date>.json`; `render`
//! writes RESULTS.md and the charts from such a file.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use thiserror::Error;

use quorum_bench_report::model::{
    Impl, Key, Machine, Method, Profile, Results, Sample, Suite, SCHEMA,
};
use quorum_bench_report::parse::{self, ParseError};
use quorum_bench_report::{charts, compare, machine, markdown, profile, stats};

#[derive(Debug, Error)]
enum Error {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Json(PathBuf, serde_json::Error),
    #[error("{what}: {source}\n--- its output began with:\n{head}")]
    Tool {
        what: String,
        source: ParseError,
        head: String,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Tool {
    /// quorum-perf --output json.
    QuorumPerf,
    /// qemu-img bench's text.
    QemuImg,
    /// fio --output-format=json.
    Fio,
    /// quorum-perf --memcpy-rate --output json (three samples: memcpy-read, memcpy-write,
    /// zero-fill).
    Memcpy,
}

#[derive(Debug, Parser)]
#[command(name = "bench-report", about = "Data steps of bench/run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Reads one run's output on stdin and appends its sample(s) to the samples file.
    Sample {
        /// Samples file (JSON lines).
        #[arg(long)]
        to: PathBuf,
        /// Which tool printed the output.
        #[arg(long, value_enum)]
        tool: Tool,
        #[arg(long, value_enum)]
        suite: Option<SuiteArg>,
        #[arg(long = "impl", value_enum)]
        imp: Option<ImplArg>,
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long, default_value = "")]
        rw: String,
        /// Bytes per I/O.
        #[arg(long)]
        bs: u64,
        /// Queue depth.
        #[arg(long, default_value_t = 0)]
        qd: u32,
    },
    /// Prints the machine description (JSON) on stdout.
    Machine {
        /// quorum-perf binary, for its version.
        #[arg(long)]
        perf: String,
        /// quorum-tgt binary, for its version.
        #[arg(long)]
        tgt: String,
        /// The repository, for its revision.
        #[arg(long)]
        repo: PathBuf,
    },
    /// Reads `perf report --stdio --no-children -g none -F overhead,sample,sym` on stdin and
    /// prints the profile (JSON) on stdout.
    Profile {
        /// What was profiled, as shown in RESULTS.md.
        #[arg(long)]
        command: String,
        /// quorum-perf's JSON output of the profiled run, for its IOPS.
        #[arg(long)]
        perf_output: Option<PathBuf>,
    },
    /// Folds the samples, machine and profile into one results file.
    Assemble {
        #[arg(long)]
        samples: PathBuf,
        #[arg(long)]
        machine: PathBuf,
        #[arg(long)]
        profile: Option<PathBuf>,
        /// UTC start of the run.
        #[arg(long)]
        date: String,
        /// full or quick.
        #[arg(long)]
        mode: String,
        #[arg(long)]
        runs: u32,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        child_bytes: u64,
        /// A setting shown with the method, as NAME=VALUE (repeatable).
        #[arg(long = "setting", value_parser = name_value)]
        settings: Vec<(String, String)>,
        /// Why the NBD part was skipped.
        #[arg(long)]
        nbd_skipped: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes RESULTS.md and its charts from a results file; prints the goals.
    Render {
        #[arg(long)]
        results: PathBuf,
        /// Markdown file to write.
        #[arg(long)]
        md: PathBuf,
        /// Directory for the SVGs, relative to the markdown file's directory.
        #[arg(long, default_value = "charts")]
        charts_dir: String,
        /// Hand-written analysis included at the end.
        #[arg(long)]
        analysis: Option<PathBuf>,
        /// Results measured by another script, as a markdown section of their own (starting
        /// with its `## ` heading), included verbatim before the analysis; repeatable (e.g.
        /// bench/spdk_bdevperf.md, written by bench/spdk_bdevperf).
        #[arg(long)]
        section: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SuiteArg {
    Inprocess,
    Nbd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ImplArg {
    Ours,
    Qemu,
}

fn name_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| Error::Io(path.into(), e))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::Io(dir.into(), e))?;
    }
    fs::write(path, text).map_err(|e| Error::Io(path.into(), e))
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    serde_json::from_str(&read(path)?).map_err(|e| Error::Json(path.into(), e))
}

fn stdin() -> Result<String, Error> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Error::Io("<stdin>".into(), e))?;
    Ok(s)
}

#[allow(clippy::too_many_arguments)]
fn sample(
    to: &Path,
    tool: Tool,
    suite: Option<SuiteArg>,
    imp: Option<ImplArg>,
    target: String,
    rw: String,
    bs: u64,
    qd: u32,
) -> Result<(), Error> {
    let text = stdin()?;
    let what = format!("{tool:?} {target} {rw} bs {bs} qd {qd}");
    let tool_err = |source| Error::Tool {
        what: what.clone(),
        source,
        head: text.lines().take(8).collect::<Vec<_>>().join("\n"),
    };
    let need = || {
        let suite = match suite.ok_or_else(|| Error::Invalid("--suite is required".into()))? {
            SuiteArg::Inprocess => Suite::Inprocess,
            SuiteArg::Nbd => Suite::Nbd,
        };
        let imp = match imp.ok_or_else(|| Error::Invalid("--impl is required".into()))? {
            ImplArg::Ours => Impl::Ours,
            ImplArg::Qemu => Impl::Qemu,
        };
        if target.is_empty() || rw.is_empty() || qd == 0 {
            return Err(Error::Invalid(
                "--target, --rw and --qd are required".into(),
            ));
        }
        Ok(Key {
            suite,
            imp,
            target: target.clone(),
            rw: rw.clone(),
            bs,
            qd,
        })
    };
    let io = |key, rate: parse::Rate, derived| Sample {
        key,
        iops: rate.iops,
        lat_us: Some(rate.lat_us),
        lat_derived: derived,
    };
    let samples = match tool {
        Tool::QuorumPerf => vec![io(
            need()?,
            parse::quorum_perf(&text).map_err(tool_err)?,
            false,
        )],
        Tool::QemuImg => vec![io(
            need()?,
            parse::qemu_img_bench(&text, qd).map_err(tool_err)?,
            true,
        )],
        Tool::Fio => vec![io(
            need()?,
            parse::fio(&text, &rw).map_err(tool_err)?,
            false,
        )],
        Tool::Memcpy => {
            let (read, write, zero) = parse::memcpy(&text).map_err(tool_err)?;
            [
                ("memcpy-read", read),
                ("memcpy-write", write),
                ("zero-fill", zero),
            ]
            .into_iter()
            .map(|(t, v)| Sample {
                key: Key {
                    suite: Suite::Limits,
                    imp: Impl::Machine,
                    target: t.into(),
                    rw: String::new(),
                    bs,
                    qd: 0,
                },
                iops: v,
                lat_us: None,
                lat_derived: false,
            })
            .collect()
        }
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(to)
        .map_err(|e| Error::Io(to.into(), e))?;
    for s in samples {
        let line = serde_json::to_string(&s).map_err(|e| Error::Json(to.into(), e))?;
        writeln!(file, "{line}").map_err(|e| Error::Io(to.into(), e))?;
    }
    Ok(())
}

fn render(
    results: &Path,
    md: &Path,
    charts_dir: &str,
    analysis: Option<&Path>,
    sections: &[PathBuf],
) -> Result<(), Error> {
    let r: Results = json(results)?;
    if r.schema != SCHEMA {
        return Err(Error::Invalid(format!(
            "{}: schema {} (this tool reads {SCHEMA})",
            results.display(),
            r.schema
        )));
    }
    let base = md.parent().unwrap_or(Path::new(""));
    let dir = base.join(charts_dir);
    fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    let mut made = Vec::new();
    for set in compare::CHARTS {
        for bs in [4096u64, 65536] {
            for rw in compare::PATTERNS {
                let name = charts::file_name(set, bs, rw);
                if charts::chart(&r, set, bs, rw, &dir.join(&name)).map_err(Error::Invalid)? {
                    made.push((format!("{charts_dir}/{name}"), charts::title(set, bs, rw)));
                }
            }
        }
    }
    let analysis = analysis.map(read).transpose()?;
    let sections = sections
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let link = relative(results, base);
    let text = markdown::render(&r, &link, &made, &sections, analysis.as_deref());
    write(md, &text)?;
    // The console summary: the goals, as in RESULTS.md.
    if let Some(i) = text.find("## The quorum issue's goals") {
        let section = &text[i..];
        let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
        println!("{}", section[..end].trim());
    }
    println!(
        "wrote {} and {} chart(s) in {}",
        md.display(),
        made.len(),
        dir.display()
    );
    Ok(())
}

/// `path` as seen from `base` when it lies under it, else as given.
fn relative(path: &Path, base: &Path) -> String {
    let abs = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, b) = (abs(path), abs(base));
    p.strip_prefix(&b)
        .unwrap_or(&p)
        .to_string_lossy()
        .into_owned()
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Sample {
            to,
            tool,
            suite,
            imp,
            target,
            rw,
            bs,
            qd,
        } => sample(&to, tool, suite, imp, target, rw, bs, qd),
        Cmd::Machine { perf, tgt, repo } => {
            let tools = [
                ("qemu-img", "qemu-img"),
                ("qemu-storage-daemon", "qemu-storage-daemon"),
                ("fio", "fio"),
                ("rustc", "rustc"),
                ("quorum-perf", perf.as_str()),
                ("quorum-tgt", tgt.as_str()),
                ("perf", "perf"),
            ];
            let m: Machine = machine::describe(&tools, &repo);
            println!("{}", serde_json::to_string_pretty(&m).expect("plain data"));
            Ok(())
        }
        Cmd::Profile {
            command,
            perf_output,
        } => {
            let iops = match perf_output {
                Some(p) => Some(
                    parse::quorum_perf(&read(&p)?)
                        .map_err(|source| Error::Tool {
                            what: "profiled run".into(),
                            source,
                            head: String::new(),
                        })?
                        .iops,
                ),
                None => None,
            };
            let p: Profile = profile::parse(&stdin()?, command, iops)
                .ok_or_else(|| Error::Invalid("perf report has no sample lines".into()))?;
            println!("{}", serde_json::to_string_pretty(&p).expect("plain data"));
            Ok(())
        }
        Cmd::Assemble {
            samples,
            machine,
            profile,
            date,
            mode,
            runs,
            seconds,
            child_bytes,
            settings,
            nbd_skipped,
            out,
        } => {
            let text = read(&samples)?;
            let mut all = Vec::new();
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let s: Sample = serde_json::from_str(line).map_err(|e| {
                    Error::Invalid(format!("{} line {}: {e}", samples.display(), n + 1))
                })?;
                all.push(s);
            }
            let results = Results {
                schema: SCHEMA,
                date,
                method: Method {
                    mode,
                    runs_per_point: runs,
                    seconds_per_run: seconds,
                    child_bytes,
                    settings: settings.into_iter().collect::<BTreeMap<_, _>>(),
                },
                machine: json(&machine)?,
                nbd_skipped,
                figures: stats::figures(&all),
                profile: profile.as_deref().map(json).transpose()?,
            };
            let text = serde_json::to_string_pretty(&results).expect("plain data");
            write(&out, &(text + "\n"))
        }
        Cmd::Render {
            results,
            md,
            charts_dir,
            analysis,
            section,
        } => render(&results, &md, &charts_dir, analysis.as_deref(), &section),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}
