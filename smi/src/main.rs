//! `nvidia-smi`: NVIDIA's command-line tool re-implemented over NVML, loaded at run time from
//! libnvidia-ml.so.1 (the fake library or a real driver's). Output and exit codes follow NVIDIA's
//! 535 binary; `docs/nvidia-smi.md` lists the deliberate differences.

mod args;
mod common;
mod list;
mod mig;
mod nvml;
mod query;
mod report;
mod table;
mod topo;

use args::{Args, Mode};
use common::SelectError;
use nvml::Nvml;
use nvml_abi::ret;
use std::io::Write;

/// Our own version, shown where NVIDIA's binary shows its build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const NO_LIBRARY: &str = "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure that the NVIDIA Display Driver is properly installed and present in your system.\nPlease also try adding directory that contains libnvidia-ml.so to your system PATH.\n";
const NO_DRIVER: &str = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n";

fn main() {
    let code = match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            255
        }
    };
    std::process::exit(code);
}

/// Prints to stdout; a closed pipe (`| head`) ends the program quietly.
fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

fn run() -> anyhow::Result<i32> {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            out(&e.msg);
            return Ok(e.code);
        }
    };
    match &args.mode {
        Mode::Help => {
            out(&help());
            return Ok(0);
        }
        Mode::HelpQueryGpu => {
            out(&query::help_gpu());
            return Ok(0);
        }
        Mode::HelpQueryApps => {
            out("List of valid properties to query for the switch \"--query-compute-apps=\":\n\ntimestamp, gpu_name, gpu_bus_id, gpu_serial, gpu_uuid, pid, process_name (or name), used_gpu_memory (or used_memory)\n");
            return Ok(0);
        }
        Mode::QueryGpu { fields } => {
            if let Some(m) = query::check_gpu_fields(fields) {
                out(&m);
                return Ok(2);
            }
        }
        Mode::QueryApps { fields } => {
            if let Some(m) = query::check_app_fields(fields) {
                out(&m);
                return Ok(2);
            }
        }
        _ => {}
    }
    let Some(nvml) = Nvml::load() else {
        out(NO_LIBRARY);
        return Ok(12);
    };
    if let Mode::Version = args.mode {
        // Like newer NVIDIA binaries: our version, then what the library reports.
        let _ = nvml.init();
        let v = |r: nvml::R<String>| r.unwrap_or_else(|e| common::err_text(e).to_string());
        out(&format!(
            "NVIDIA-SMI version  : {VERSION}\nNVML version        : {}\nDRIVER version      : {}\nCUDA Version        : {}\n",
            v(nvml.nvml_version()),
            v(nvml.driver_version()),
            v(nvml.cuda_version().map(common::cuda_text))
        ));
        let _ = nvml.shutdown();
        return Ok(0);
    }
    match nvml.init() {
        Ok(()) => {}
        Err(ret::DRIVER_NOT_LOADED) => {
            out(NO_DRIVER);
            return Ok(9);
        }
        Err(ret::LIB_RM_VERSION_MISMATCH) => {
            let v = nvml.driver_version().unwrap_or_default();
            let short: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
            out(&format!("Failed to initialize NVML: Driver/library version mismatch\nNVML library version: {short}\n"));
            return Ok(18);
        }
        Err(e) => {
            out(&format!("Failed to initialize NVML: {}\n", common::err_text(e)));
            return Ok(e as i32);
        }
    }
    let code = dispatch(&nvml, &args);
    if nvml.shutdown().is_err() {
        out("Failed to properly shut down NVML: \n");
        return Ok(255);
    }
    Ok(code)
}

fn dispatch(nvml: &Nvml, args: &Args) -> i32 {
    match &args.mode {
        Mode::Mig(cmd) => return mig::run(nvml, cmd, args.ids.as_deref(), &mut |s| out(s)),
        Mode::TopoMatrix => return topo::run(nvml, &mut |s| out(s)),
        _ => {}
    }
    loop {
        let code = once(nvml, args);
        let Some(ms) = args.loop_ms else { return code };
        if code != 0 {
            return code;
        }
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn once(nvml: &Nvml, args: &Args) -> i32 {
    if args.mode == Mode::List && args.ids.is_none() {
        let (text, code) = list::render_all(nvml);
        out(&text);
        return code;
    }
    let ids = if args.mode == Mode::List { None } else { args.ids.as_deref() };
    let devs = match common::select(nvml, ids) {
        Ok(d) => d,
        Err(SelectError::NoDevices) if args.mode == Mode::List => {
            out("No devices found.\n");
            return 0;
        }
        Err(e) => {
            let (text, code) = e.report();
            out(&text);
            return code;
        }
    };
    let fmt = args.format.clone().unwrap_or_default();
    match &args.mode {
        Mode::List => out(&list::render(&devs)),
        Mode::Table => out(&table::render(nvml, &devs, VERSION)),
        Mode::QueryGpu { fields } => out(&query::render_gpu(nvml, &devs, fields, &fmt)),
        Mode::QueryApps { fields } => out(&query::render_apps(nvml, &devs, fields, &fmt)),
        Mode::Query { xml, display } => out(&report::render(nvml, &devs, *xml, display, args.ids.is_some())),
        _ => {}
    }
    0
}

fn help() -> String {
    format!(
        "NVIDIA System Management Interface -- v{VERSION} (fake-gpu-operator; talks NVML through libnvidia-ml.so.1)

Usage: nvidia-smi [OPTION1 [ARG1]] [OPTION2 [ARG2]] ...

    -h,   --help                Print usage information and exit.
          --version             Print version information and exit.

  LIST OPTIONS:
    -L,   --list-gpus           Display a list of GPUs connected to the system.

  SUMMARY OPTIONS (default):
    -i,   --id=                 Target a specific GPU (index, UUID or PCI bus id; comma list).
    -l,   --loop=               Probe until Ctrl+C at the specified second interval.
    -lms, --loop-ms=            Probe until Ctrl+C at the specified millisecond interval.

  QUERY OPTIONS:
    -q,   --query               Display GPU or Unit info.
    -x,   --xml-format          Produce XML output.
    -d,   --display=            Display only selected information: MEMORY, UTILIZATION, ECC,
                                TEMPERATURE, POWER, CLOCK, COMPUTE, PIDS, PERFORMANCE,
                                SUPPORTED_CLOCKS, PAGE_RETIREMENT, ACCOUNTING, ENCODER_STATS,
                                SUPPORTED_GPU_TARGET_TEMP, VOLTAGE, FBC_STATS, ROW_REMAPPER,
                                RESET_STATUS, GSP_FIRMWARE_VERSION (comma list).

  SELECTIVE QUERY OPTIONS:
    --query-gpu=                Information about GPU (see --help-query-gpu).
    --query-compute-apps=       List of active compute processes (see --help-query-compute-apps).
    --format=                   csv, with optional noheader and nounits (comma list).

  SUBCOMMANDS:
    mig -lgip | -lgipp | -lgi | -lci [-i ID]   MIG profiles, placements, GPU/compute instances.
    topo -m                                    GPU topology matrix.
"
    )
}
