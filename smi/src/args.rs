//! Command-line parsing in nvidia-smi's own syntax: `-x` and `--long=value` or `--long value`,
//! `-i 0,1`, `-l [sec]`, `-lms [ms]`, and the `mig` / `topo` subcommands. Errors carry the exact
//! text and exit code NVIDIA's binary uses.

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Table,
    List,
    Query { xml: bool, display: Vec<String> },
    QueryGpu { fields: Vec<String> },
    QueryApps { fields: Vec<String> },
    HelpQueryGpu,
    HelpQueryApps,
    Help,
    Version,
    Mig(MigCmd),
    TopoMatrix,
}

/// `nvidia-smi mig` listings.
#[derive(Debug, Clone, PartialEq)]
pub enum MigCmd {
    Lgip,
    Lgipp,
    Lgi,
    Lci,
}

/// CSV options of `--format=`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Format {
    pub csv: bool,
    pub noheader: bool,
    pub nounits: bool,
}

/// Everything parsed.
#[derive(Debug, Clone)]
pub struct Args {
    pub mode: Mode,
    pub ids: Option<Vec<String>>,
    pub format: Option<Format>,
    /// Loop period in milliseconds (`-l` seconds or `-lms`).
    pub loop_ms: Option<u64>,
}

/// A parse failure: the message (printed to stdout, as NVIDIA does) and the exit code.
#[derive(Debug)]
pub struct ArgError {
    pub msg: String,
    pub code: i32,
}

fn unrecognized(opt: &str) -> ArgError {
    ArgError { msg: format!("ERROR: Option {opt} is not recognized. Please run 'nvidia-smi -h'.\n\n"), code: 255 }
}

fn invalid_for_command(opt: &str) -> ArgError {
    ArgError { msg: format!("ERROR: Option {opt} is not valid for this command. Please run 'nvidia-smi -h' for help.\n\n"), code: 2 }
}

/// The valid `-d` section names (upper case, as NVIDIA accepts them).
pub const DISPLAY_SECTIONS: &[&str] = &[
    "MEMORY",
    "UTILIZATION",
    "ECC",
    "TEMPERATURE",
    "POWER",
    "CLOCK",
    "COMPUTE",
    "PIDS",
    "PERFORMANCE",
    "SUPPORTED_CLOCKS",
    "PAGE_RETIREMENT",
    "ACCOUNTING",
    "ENCODER_STATS",
    "SUPPORTED_GPU_TARGET_TEMP",
    "VOLTAGE",
    "FBC_STATS",
    "ROW_REMAPPER",
    "RESET_STATUS",
    "GSP_FIRMWARE_VERSION",
];

/// Parses argv (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, ArgError> {
    let v: Vec<String> = argv.into_iter().collect();
    match v.first().map(String::as_str) {
        Some("mig") => return parse_mig(&v[1..]),
        Some("topo") => return parse_topo(&v[1..]),
        _ => {}
    }
    let mut list = false;
    let mut query = false;
    let mut xml = false;
    let mut display: Option<String> = None;
    let mut ids: Option<String> = None;
    let mut qgpu: Option<String> = None;
    let mut qapps: Option<String> = None;
    let mut format: Option<String> = None;
    let mut loop_ms = None;
    let mut mode_override = None;
    let mut i = 0;
    // Takes the value of an option: inline after '=' or the next word.
    let value = |i: &mut usize, inline: Option<&str>, opt: &str| -> Result<String, ArgError> {
        if let Some(s) = inline {
            return Ok(s.to_string());
        }
        *i += 1;
        v.get(*i)
            .cloned()
            .ok_or_else(|| ArgError { msg: format!("ERROR: Option {opt} requires a value. Please run 'nvidia-smi -h'.\n\n"), code: 255 })
    };
    while i < v.len() {
        let a = v[i].as_str();
        let (opt, inline) = match a.split_once('=') {
            Some((o, val)) if a.starts_with("--") => (o, Some(val)),
            _ => (a, None),
        };
        match opt {
            "-L" | "--list-gpus" => list = true,
            "-q" | "--query" => query = true,
            "-x" | "--xml-format" => xml = true,
            "-d" | "--display" => display = Some(value(&mut i, inline, opt)?),
            "-i" | "--id" => ids = Some(value(&mut i, inline, opt)?),
            "--query-gpu" => qgpu = Some(value(&mut i, inline, opt)?),
            "--query-compute-apps" => qapps = Some(value(&mut i, inline, opt)?),
            "--format" => format = Some(value(&mut i, inline, opt)?),
            "--help-query-gpu" => mode_override = Some(Mode::HelpQueryGpu),
            "--help-query-compute-apps" => mode_override = Some(Mode::HelpQueryApps),
            "-h" | "--help" => mode_override = Some(Mode::Help),
            "--version" => mode_override = Some(Mode::Version),
            "-l" | "--loop" | "-lms" | "--loop-ms" => {
                let ms_unit = opt == "-lms" || opt == "--loop-ms";
                let n = match inline {
                    Some(s) => Some(s.to_string()),
                    None => match v.get(i + 1) {
                        Some(s) if s.chars().all(|c| c.is_ascii_digit()) => {
                            i += 1;
                            Some(s.clone())
                        }
                        _ => None,
                    },
                };
                let n: u64 = match n {
                    Some(s) => s.parse().map_err(|_| unrecognized(a))?,
                    None if ms_unit => 1000,
                    None => 5,
                };
                loop_ms = Some(if ms_unit { n.max(1) } else { n.max(1) * 1000 });
            }
            _ => return Err(unrecognized(a)),
        }
        i += 1;
    }
    if let Some(m) = mode_override {
        return Ok(Args { mode: m, ids: None, format: None, loop_ms: None });
    }
    let fmt = format.as_deref().map(parse_format).transpose()?;
    let mode = if let Some(q) = qgpu {
        if fmt.is_none() {
            return Err(ArgError { msg: "\"--format=\" switch is missing. Please run 'nvidia-smi -h' for help.\n\n".into(), code: 2 });
        }
        Mode::QueryGpu { fields: split_list(&q) }
    } else if let Some(q) = qapps {
        if fmt.is_none() {
            return Err(ArgError { msg: "\"--format=\" switch is missing. Please run 'nvidia-smi -h' for help.\n\n".into(), code: 2 });
        }
        Mode::QueryApps { fields: split_list(&q) }
    } else if list {
        if ids.is_some() {
            return Err(invalid_for_command("-i"));
        }
        Mode::List
    } else if query || xml {
        let display = match display {
            Some(d) => {
                let secs: Vec<String> = split_list(&d).into_iter().map(|s| s.to_ascii_uppercase()).collect();
                if secs.is_empty() || secs.iter().any(|s| !DISPLAY_SECTIONS.contains(&s.as_str())) {
                    return Err(ArgError { msg: "Failed to parse --display/-d flags\n".into(), code: 2 });
                }
                secs
            }
            None => Vec::new(),
        };
        Mode::Query { xml, display }
    } else {
        if display.is_some() {
            return Err(invalid_for_command("-d"));
        }
        Mode::Table
    };
    Ok(Args { mode, ids: ids.map(|s| split_list(&s)), format: fmt, loop_ms })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect()
}

fn parse_format(s: &str) -> Result<Format, ArgError> {
    let mut f = Format::default();
    for p in split_list(s) {
        match p.as_str() {
            "csv" => f.csv = true,
            "noheader" => f.noheader = true,
            "nounits" => f.nounits = true,
            _ => return Err(ArgError { msg: format!("\"{p}\" is not a valid format option.\n\n"), code: 2 }),
        }
    }
    if !f.csv {
        return Err(ArgError { msg: "\"--format=\" switch is missing. Please run 'nvidia-smi -h' for help.\n\n".into(), code: 2 });
    }
    Ok(f)
}

fn parse_mig(v: &[String]) -> Result<Args, ArgError> {
    let mut cmd = None;
    let mut ids = None;
    let mut i = 0;
    while i < v.len() {
        match v[i].as_str() {
            "-lgip" | "--list-gpu-instance-profiles" => cmd = Some(MigCmd::Lgip),
            "-lgipp" | "--list-gpu-instance-possible-placements" => cmd = Some(MigCmd::Lgipp),
            "-lgi" | "--list-gpu-instances" => cmd = Some(MigCmd::Lgi),
            "-lci" | "--list-compute-instances" => cmd = Some(MigCmd::Lci),
            "-i" | "--id" => {
                i += 1;
                ids = v.get(i).map(|s| split_list(s));
            }
            o => return Err(unrecognized(o)),
        }
        i += 1;
    }
    let cmd = cmd.ok_or_else(|| unrecognized("mig"))?;
    Ok(Args { mode: Mode::Mig(cmd), ids, format: None, loop_ms: None })
}

fn parse_topo(v: &[String]) -> Result<Args, ArgError> {
    match v.first().map(String::as_str) {
        Some("-m") | Some("--matrix") => Ok(Args { mode: Mode::TopoMatrix, ids: None, format: None, loop_ms: None }),
        Some(o) => Err(unrecognized(o)),
        None => Err(unrecognized("topo")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, ArgError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn modes() {
        assert_eq!(p("").unwrap().mode, Mode::Table);
        assert_eq!(p("-L").unwrap().mode, Mode::List);
        assert_eq!(p("-q -x").unwrap().mode, Mode::Query { xml: true, display: vec![] });
        assert_eq!(p("-q -d memory,ECC").unwrap().mode, Mode::Query { xml: false, display: vec!["MEMORY".into(), "ECC".into()] });
        let a = p("--query-gpu=index,name --format=csv,noheader -i 1,2").unwrap();
        assert_eq!(a.mode, Mode::QueryGpu { fields: vec!["index".into(), "name".into()] });
        assert!(a.format.unwrap().noheader);
        assert_eq!(a.ids.unwrap(), vec!["1", "2"]);
        assert_eq!(p("-l 2").unwrap().loop_ms, Some(2000));
        assert_eq!(p("-lms 250").unwrap().loop_ms, Some(250));
        assert_eq!(p("mig -lgip").unwrap().mode, Mode::Mig(MigCmd::Lgip));
        assert_eq!(p("topo -m").unwrap().mode, Mode::TopoMatrix);
    }

    #[test]
    fn errors_match_nvidia() {
        let e = p("--bogus").unwrap_err();
        assert_eq!((e.msg.as_str(), e.code), ("ERROR: Option --bogus is not recognized. Please run 'nvidia-smi -h'.\n\n", 255));
        assert_eq!(p("--query-gpu=index").unwrap_err().code, 2);
        assert_eq!(p("-L -i 0").unwrap_err().code, 2);
        assert_eq!(p("-q -d FOO").unwrap_err().code, 2);
    }
}
