//! `nvmlDeviceGetFieldValues`: many readings in one call, each entry with its own return
//! code. Covers what nvidia-smi -q and dcgm-style readers ask for.

use std::ffi::c_int;

use nvml_abi::consts::*;
use nvml_abi::{field, nvmlDevice_t, nvmlFieldValue_t, nvmlReturn_t, nvmlValue_t, ret};

use crate::device::Device;
use crate::exports::ecc::injected_ecc;
use crate::exports::telemetry::total_energy_mj;
use crate::ffi::guard;
use crate::runtime::device;

/// A field's value: which union member, and the value.
enum Value {
    Uint(u32),
    Ull(u64),
    Sint(i32),
}

fn read_field(d: &Device, id: u32, scope: u32) -> Result<Value, nvmlReturn_t> {
    let p = &d.profile;
    let power_gpu_scope = || {
        if scope == field::POWER_SCOPE_GPU {
            Ok(())
        } else {
            Err(ret::NOT_SUPPORTED)
        }
    };
    // Module (superchip) limits, where the board is part of one.
    let module = p.board.module_power.filter(|_| scope == field::POWER_SCOPE_MODULE);
    let ecc = |error_type, counter_type| {
        if d.ecc() {
            Ok(Value::Ull(injected_ecc(d, error_type, counter_type)))
        } else {
            Err(ret::NOT_SUPPORTED)
        }
    };
    let tlimit = |pick: fn(&fakegpu_model::profile::TLimit) -> Option<i32>| {
        p.thermal.tlimit.as_ref().and_then(pick).map(Value::Sint).ok_or(ret::NOT_SUPPORTED)
    };
    Ok(match id {
        field::ECC_CURRENT | field::ECC_PENDING => Value::Uint(if d.ecc() { NVML_FEATURE_ENABLED } else { NVML_FEATURE_DISABLED }),
        field::ECC_SBE_VOL_TOTAL => ecc(NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC)?,
        field::ECC_DBE_VOL_TOTAL => ecc(NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)?,
        field::ECC_SBE_AGG_TOTAL => ecc(NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_AGGREGATE_ECC)?,
        field::ECC_DBE_AGG_TOTAL => ecc(NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC)?,
        field::RETIRED_SBE | field::RETIRED_DBE | field::RETIRED_PENDING | field::RETIRED_PENDING_SBE | field::RETIRED_PENDING_DBE => {
            if d.remaps_rows() || !d.ecc() {
                return Err(ret::NOT_SUPPORTED);
            }
            let f = d.faults();
            Value::Ull(match id {
                field::RETIRED_SBE => f.retired_pages_sbe.len() as u64,
                field::RETIRED_DBE => f.retired_pages_dbe.len() as u64,
                _ => 0,
            })
        }
        field::REMAPPED_COR | field::REMAPPED_UNC | field::REMAPPED_PENDING | field::REMAPPED_FAILURE => {
            if !d.remaps_rows() {
                return Err(ret::NOT_SUPPORTED);
            }
            let r = d.faults().remapped_rows;
            Value::Uint(match id {
                field::REMAPPED_COR => r.correctable,
                field::REMAPPED_UNC => r.uncorrectable,
                field::REMAPPED_PENDING => r.pending as u32,
                _ => r.failure as u32,
            })
        }
        field::MEMORY_TEMP => Value::Uint(d.readings().memory_temp_c.ok_or(ret::NOT_SUPPORTED)?),
        field::TOTAL_ENERGY_CONSUMPTION => Value::Ull(total_energy_mj(d)),
        field::PCIE_REPLAY_COUNTER | field::PCIE_REPLAY_ROLLOVER_COUNTER => Value::Uint(0),
        field::NVLINK_LINK_COUNT => Value::Uint(p.board.nvlink.map(|n| n.links).ok_or(ret::NOT_SUPPORTED)?),
        field::POWER_AVERAGE | field::POWER_INSTANT => {
            power_gpu_scope()?;
            Value::Uint(d.readings().power_mw)
        }
        field::POWER_MIN_LIMIT => {
            if let Some(m) = module {
                return Ok(Value::Uint(m.min_limit_mw));
            }
            power_gpu_scope()?;
            Value::Uint(p.power.min_limit_mw)
        }
        field::POWER_MAX_LIMIT => {
            if let Some(m) = module {
                return Ok(Value::Uint(m.max_limit_mw));
            }
            power_gpu_scope()?;
            Value::Uint(p.power.max_limit_mw)
        }
        field::POWER_DEFAULT_LIMIT | field::POWER_CURRENT_LIMIT | field::POWER_REQUESTED_LIMIT => {
            if let Some(m) = module {
                return Ok(Value::Uint(m.default_limit_mw));
            }
            power_gpu_scope()?;
            Value::Uint(p.power.default_limit_mw)
        }
        field::ENERGY => {
            power_gpu_scope()?;
            Value::Ull(total_energy_mj(d))
        }
        field::TEMPERATURE_SHUTDOWN_TLIMIT => tlimit(|t| Some(t.shutdown_c))?,
        field::TEMPERATURE_SLOWDOWN_TLIMIT => tlimit(|t| Some(t.slowdown_c))?,
        field::TEMPERATURE_GPU_MAX_TLIMIT => tlimit(|t| Some(t.gpu_max_c))?,
        field::TEMPERATURE_MEM_MAX_TLIMIT => tlimit(|t| t.memory_max_c)?,
        _ => return Err(ret::NOT_SUPPORTED),
    })
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(dev: nvmlDevice_t, valuesCount: c_int, values: *mut nvmlFieldValue_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetFieldValues", || {
        let d = device(dev)?;
        if values.is_null() || valuesCount <= 0 {
            return Err(ret::INVALID_ARGUMENT);
        }
        let entries = std::slice::from_raw_parts_mut(values, valuesCount as usize);
        let timestamp = now_us();
        for entry in entries {
            entry.timestamp = timestamp;
            entry.latencyUsec = 0;
            match read_field(d, entry.fieldId, entry.scopeId) {
                Ok(value) => {
                    entry.nvmlReturn = ret::SUCCESS;
                    (entry.valueType, entry.value) = match value {
                        Value::Uint(v) => (NVML_VALUE_TYPE_UNSIGNED_INT, nvmlValue_t { uiVal: v }),
                        Value::Ull(v) => (NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, nvmlValue_t { ullVal: v }),
                        Value::Sint(v) => (NVML_VALUE_TYPE_SIGNED_INT, nvmlValue_t { siVal: v }),
                    };
                }
                Err(code) => entry.nvmlReturn = code,
            }
        }
        Ok(())
    })
}
