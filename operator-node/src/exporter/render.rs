//! Prometheus text exposition (format 0.0.4) of the GPU families, with the label set and
//! order of upstream fake-gpu-operator: `gpu, UUID, device, modelName, Hostname, container,
//! namespace, pod`. Pure and allocation-light: a scrape of thousands of GPUs is one pass that
//! copies pre-rendered label blocks.

use std::fmt::Write as _;

use super::families::{Family, Field, FAMILIES};
use super::sample::GpuValues;

/// `Content-Type` of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label values of one GPU's series. `container`/`namespace`/`pod` are empty for a free GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLabels<'a> {
    pub gpu: u32,
    pub uuid: &'a str,
    pub model_name: &'a str,
    /// A MIG device's GPU instance: `GPU_I_PROFILE` and `GPU_I_ID` (dcgm-exporter's labels,
    /// after `modelName`); `None` for a whole GPU.
    pub instance: Option<(&'a str, u32)>,
    pub hostname: &'a str,
    pub container: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
}

/// One GPU: its label block (see [`label_block`]) and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series<'a> {
    pub labels: &'a str,
    pub values: GpuValues,
}

fn escape_into(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `gpu="0",UUID="…",device="nvidia0",modelName="…",[GPU_I_PROFILE="…",GPU_I_ID="…",]Hostname="…",container="…",namespace="…",pod="…"`.
pub fn label_block(l: &SeriesLabels<'_>) -> String {
    let mut s = String::with_capacity(96 + l.uuid.len() + l.model_name.len() + l.hostname.len() + l.pod.len());
    let _ = write!(s, "gpu=\"{}\",UUID=\"", l.gpu);
    escape_into(&mut s, l.uuid);
    let _ = write!(s, "\",device=\"nvidia{}\",modelName=\"", l.gpu);
    escape_into(&mut s, l.model_name);
    if let Some((profile, id)) = l.instance {
        s.push_str("\",GPU_I_PROFILE=\"");
        escape_into(&mut s, profile);
        let _ = write!(s, "\",GPU_I_ID=\"{id}");
    }
    s.push_str("\",Hostname=\"");
    for (value, next) in [(l.hostname, "\",container=\""), (l.container, "\",namespace=\""), (l.namespace, "\",pod=\""), (l.pod, "\"")] {
        escape_into(&mut s, value);
        s.push_str(next);
    }
    s
}

enum Value {
    Int(u64),
    /// Millionths, printed with six decimals as dcgm-exporter prints doubles (`%f`).
    Micro(u64),
    Absent,
}

fn value_of(v: &GpuValues, field: Field) -> Value {
    use Value::{Absent, Int, Micro};
    // DCGM has no utilization counters for a GPU instance (NVML answers NOT_SUPPORTED for MIG
    // devices); the profiling ratios stand for them.
    if v.mig_instance && matches!(field, Field::GpuUtil | Field::MemCopyUtil | Field::EncUtil | Field::DecUtil) {
        return Absent;
    }
    match field {
        Field::SmClock => Int(v.sm_clock_mhz.into()),
        Field::MemClock => Int(v.mem_clock_mhz.into()),
        Field::MemoryTemp => v.memory_temp_c.map_or(Absent, |t| Int(t.into())),
        Field::GpuTemp => Int(v.gpu_temp_c.into()),
        Field::PowerUsage => Micro(u64::from(v.power_mw) * 1000),
        Field::TotalEnergy => Int(v.energy_mj),
        Field::PcieReplay => Int(v.pcie_replays),
        Field::GpuUtil => Int(v.gpu_util.into()),
        Field::MemCopyUtil => Int(v.mem_copy_util.into()),
        Field::EncUtil => Int(v.enc_util.into()),
        Field::DecUtil => Int(v.dec_util.into()),
        Field::XidErrors => Int(v.last_xid.into()),
        Field::FbFree => Int(v.fb_free_mib),
        Field::FbUsed => Int(v.fb_used_mib),
        Field::GrEngineActive => Micro(v.gr_engine_active_micro.into()),
        Field::PipeTensorActive => Micro(v.pipe_tensor_active_micro.into()),
        Field::DramActive => Micro(v.dram_active_micro.into()),
    }
}

fn push_value(out: &mut String, value: Value, buf: &mut itoa::Buffer) {
    match value {
        Value::Int(n) => out.push_str(buf.format(n)),
        Value::Micro(m) => {
            out.push_str(buf.format(m / 1_000_000));
            let frac = m % 1_000_000;
            out.push('.');
            let digits = buf.format(frac);
            for _ in digits.len()..6 {
                out.push('0');
            }
            out.push_str(digits);
        }
        Value::Absent => {}
    }
}

fn render_family(out: &mut String, family: &Family, series: &[Series<'_>], buf: &mut itoa::Buffer) {
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
    for s in series {
        let value = value_of(&s.values, family.field);
        if matches!(value, Value::Absent) {
            continue;
        }
        out.push_str(family.name);
        out.push('{');
        out.push_str(s.labels);
        out.push_str("} ");
        push_value(out, value, buf);
        out.push('\n');
    }
}

/// Appends every family, in [`FAMILIES`] order, for `series` (in the given order) to `out`.
/// Families are written even when `series` is empty (HELP/TYPE only), as client libraries do.
pub fn render_into(out: &mut String, series: &[Series<'_>]) {
    let mut buf = itoa::Buffer::new();
    let per_series: usize = series.first().map_or(0, |s| s.labels.len() + 48);
    out.reserve(FAMILIES.len() * (120 + per_series * series.len()));
    for family in &FAMILIES {
        render_family(out, family, series, &mut buf);
    }
}

/// [`render_into`] in pieces: each family's text goes to `sink` as soon as it is complete, so a
/// consumer that compresses never holds the whole text (27 MB for 8,000 GPUs) at once.
pub fn render_chunks(series: &[Series<'_>], sink: &mut dyn FnMut(&str)) {
    let mut buf = itoa::Buffer::new();
    let per_series: usize = series.first().map_or(0, |s| s.labels.len() + 48);
    let mut chunk = String::with_capacity(120 + per_series * series.len());
    for family in &FAMILIES {
        chunk.clear();
        render_family(&mut chunk, family, series, &mut buf);
        sink(&chunk);
    }
}

/// [`render_into`] in pieces of about `piece` bytes: each goes to `sink` once it holds at least
/// `piece` bytes (whole lines; the last piece is what remains), so that a consumer that streams
/// or compresses the text holds one piece of it at a time, whatever the number of GPUs.
pub fn render_pieces(series: &[Series<'_>], piece: usize, sink: &mut dyn FnMut(&str)) {
    let mut buf = itoa::Buffer::new();
    let line: usize = series.first().map_or(0, |s| s.labels.len() + 96);
    let mut chunk = String::with_capacity(piece + line.max(256));
    let mut flush_if_full = |chunk: &mut String| {
        if chunk.len() >= piece {
            sink(chunk);
            chunk.clear();
        }
    };
    for family in &FAMILIES {
        flush_if_full(&mut chunk);
        let _ = writeln!(chunk, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(chunk, "# TYPE {} {}", family.name, family.kind.as_str());
        for s in series {
            flush_if_full(&mut chunk);
            let value = value_of(&s.values, family.field);
            if matches!(value, Value::Absent) {
                continue;
            }
            chunk.push_str(family.name);
            chunk.push('{');
            chunk.push_str(s.labels);
            chunk.push_str("} ");
            push_value(&mut chunk, value, &mut buf);
            chunk.push('\n');
        }
    }
    if !chunk.is_empty() {
        sink(&chunk);
    }
}

/// [`render_into`] a new string.
pub fn render(series: &[Series<'_>]) -> String {
    let mut out = String::new();
    render_into(&mut out, series);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> GpuValues {
        GpuValues {
            sm_clock_mhz: 1980,
            mem_clock_mhz: 2619,
            memory_temp_c: Some(45),
            gpu_temp_c: 61,
            power_mw: 612_345,
            energy_mj: 123_456_789,
            pcie_replays: 0,
            gpu_util: 87,
            mem_copy_util: 43,
            enc_util: 0,
            dec_util: 0,
            last_xid: 79,
            fb_free_mib: 40_000,
            fb_used_mib: 41_000,
            gr_engine_active_micro: 870_000,
            pipe_tensor_active_micro: 435_000,
            dram_active_micro: 5,
            mig_instance: false,
        }
    }

    const GOLDEN: &str = include_str!("testdata/two-gpus.prom");

    fn two_gpus() -> Vec<(String, GpuValues)> {
        let busy = SeriesLabels {
            gpu: 0,
            uuid: "GPU-e3d167f4-26a5-4799-ad0a-21c54e7b01d1",
            model_name: "NVIDIA H100 80GB HBM3",
            instance: None,
            hostname: "kwok-a100-1",
            container: "main",
            namespace: "team-a",
            pod: "train-0",
        };
        let free = SeriesLabels { gpu: 1, uuid: "GPU-1", container: "", namespace: "", pod: "", ..busy };
        let idle = GpuValues {
            memory_temp_c: None,
            gpu_util: 0,
            power_mw: 70_000,
            fb_used_mib: 0,
            fb_free_mib: 81_000,
            last_xid: 0,
            mem_copy_util: 0,
            gr_engine_active_micro: 0,
            pipe_tensor_active_micro: 0,
            dram_active_micro: 0,
            ..values()
        };
        vec![(label_block(&busy), values()), (label_block(&free), idle)]
    }

    fn series(gpus: &[(String, GpuValues)]) -> Vec<Series<'_>> {
        gpus.iter().map(|(labels, values)| Series { labels, values: *values }).collect()
    }

    #[test]
    fn golden_two_gpus() {
        let text = render(&series(&two_gpus()));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/src/exporter/testdata/two-gpus.prom"), &text).unwrap();
        }
        assert_eq!(text, GOLDEN);
    }

    #[test]
    fn label_order_is_upstreams() {
        let block = &two_gpus()[0].0;
        let names: Vec<&str> = block.split(',').map(|kv| kv.split('=').next().unwrap()).collect();
        assert_eq!(names, ["gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace", "pod"]);
    }

    /// A MIG device's series: dcgm-exporter's `GPU_I_PROFILE`/`GPU_I_ID` after `modelName`, and
    /// no utilization counters (DCGM has none for a GPU instance).
    #[test]
    fn mig_instance_series() {
        let values = &two_gpus()[0].1;
        let l = SeriesLabels {
            gpu: 2,
            uuid: "GPU-2",
            model_name: "NVIDIA A100-SXM4-40GB",
            instance: Some(("1g.5gb", 13)),
            hostname: "n1",
            container: "main",
            namespace: "ns",
            pod: "p",
        };
        let block = label_block(&l);
        let names: Vec<&str> = block.split(',').map(|kv| kv.split('=').next().unwrap()).collect();
        assert_eq!(names, ["gpu", "UUID", "device", "modelName", "GPU_I_PROFILE", "GPU_I_ID", "Hostname", "container", "namespace", "pod"]);
        assert!(block.contains(r#"GPU_I_PROFILE="1g.5gb",GPU_I_ID="13""#), "{block}");
        let mig = GpuValues { mig_instance: true, ..*values };
        let text = render(&[Series { labels: &block, values: mig }]);
        for absent in ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL"] {
            assert!(!text.contains(&format!("{absent}{{")), "{absent}: {text}");
        }
        for present in ["DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_POWER_USAGE"] {
            assert!(text.contains(&format!("{present}{{{block}}}")), "{present}: {text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let l = SeriesLabels {
            gpu: 3,
            uuid: "u",
            model_name: "a\"b\\c\nd",
            instance: None,
            hostname: "h",
            container: "",
            namespace: "",
            pod: "",
        };
        assert_eq!(
            label_block(&l),
            r#"gpu="3",UUID="u",device="nvidia3",modelName="a\"b\\c\nd",Hostname="h",container="",namespace="",pod="""#
        );
    }

    #[test]
    fn empty_exposition_has_help_and_type_for_every_family() {
        let text = render(&[]);
        assert_eq!(text.lines().count(), 2 * FAMILIES.len());
        assert!(text.lines().all(|l| l.starts_with("# HELP ") || l.starts_with("# TYPE ")));
    }

    #[test]
    fn every_sample_line_parses() {
        for line in render(&series(&two_gpus())).lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with('}') && series.contains('{'), "{line}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("value of {line}"));
        }
    }

    #[test]
    fn micro_values_print_six_decimals() {
        let mut out = String::new();
        let mut buf = itoa::Buffer::new();
        for (m, want) in [(0, "0.000000"), (5, "0.000005"), (1_000_000, "1.000000"), (612_345_000, "612.345000")] {
            out.clear();
            push_value(&mut out, Value::Micro(m), &mut buf);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn pieces_are_bounded_whole_lines_that_concatenate_to_the_text() {
        let labels: Vec<String> = (0..200).map(|i| format!("gpu=\"{i}\",UUID=\"GPU-{i}\"")).collect();
        let series: Vec<Series<'_>> = labels.iter().map(|l| Series { labels: l, values: values() }).collect();
        let text = render(&series);
        for piece in [1, 100, 4096, 1 << 20] {
            let mut pieces = Vec::new();
            render_pieces(&series, piece, &mut |c| pieces.push(c.to_string()));
            assert_eq!(pieces.concat(), text, "piece size {piece}");
            assert!(pieces.iter().all(|p| p.ends_with('\n')), "whole lines");
            // A piece is sent once it reaches the size: it exceeds it by at most its last line,
            // or a family's HELP and TYPE lines.
            let longest_line = text.lines().map(|l| l.len() + 1).max().unwrap();
            assert!(pieces.iter().all(|p| p.len() < piece + 2 * longest_line), "piece size {piece}");
            let (last, full) = pieces.split_last().unwrap();
            assert!(full.iter().all(|p| p.len() >= piece) && !last.is_empty(), "piece size {piece}");
        }
        let mut one = Vec::new();
        render_pieces(&series, 1 << 20, &mut |c| one.push(c.len()));
        assert_eq!(one, [text.len()], "a text shorter than a piece is one piece");
    }

    #[test]
    fn chunks_concatenate_to_the_text() {
        let labels = ["gpu=\"0\"".to_string(), "gpu=\"1\"".to_string()];
        let series: Vec<Series<'_>> = labels.iter().map(|l| Series { labels: l, values: values() }).collect();
        let mut chunks = Vec::new();
        render_chunks(&series, &mut |c| chunks.push(c.to_string()));
        assert_eq!(chunks.len(), FAMILIES.len(), "one chunk per family");
        assert_eq!(chunks.concat(), render(&series));
    }
}
