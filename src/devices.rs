//! The compute devices a worker trains on: the CPU, or NVIDIA GPUs through candle's CUDA backend
//! (the `cuda` cargo feature). `--devices cpu|cuda|cuda:0,1` names them; without it a worker takes
//! every GPU the CUDA build sees, else the CPU. Each device is described (name, memory) for the
//! workers listing and the memory pre-check, and opened as a candle [`Device`] by the training
//! child it is given to.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

/// The kind of device a job asks for (`"device"` in a job's spec) and a worker slot offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

/// One device: the CPU (all its cores, shared by the CPU slots) or one CUDA GPU by ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceId {
    Cpu,
    Cuda(usize),
}

impl DeviceId {
    pub fn kind(self) -> DeviceKind {
        match self {
            DeviceId::Cpu => DeviceKind::Cpu,
            DeviceId::Cuda(_) => DeviceKind::Gpu,
        }
    }

    /// The candle device. On a build without the `cuda` feature a GPU is an error that says so.
    pub fn open(self) -> candle_core::Result<Device> {
        match self {
            DeviceId::Cpu => Ok(Device::Cpu),
            DeviceId::Cuda(n) if cfg!(feature = "cuda") => Device::new_cuda(n),
            DeviceId::Cuda(n) => candle_core::bail!(
                "device cuda:{n}: this wick was built without the `cuda` feature (scripts/cuda-build.sh build)"
            ),
        }
    }

    /// Name and memory, for the workers listing and the memory pre-check.
    pub fn describe(self) -> Result<DeviceInfo, DeviceError> {
        match self {
            DeviceId::Cpu => Ok(DeviceInfo {
                id: self.to_string(),
                kind: DeviceKind::Cpu,
                name: crate::machine::cpu_model_name().unwrap_or_else(|| "cpu".into()),
                memory_bytes: crate::machine::total_memory_bytes(),
            }),
            DeviceId::Cuda(n) => cuda::describe(n).map(|(name, memory)| DeviceInfo {
                id: self.to_string(),
                kind: DeviceKind::Gpu,
                name,
                memory_bytes: Some(memory),
            }),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => f.write_str("cpu"),
            DeviceId::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceId {
    type Err = DeviceError;

    /// `cpu` or `cuda:N` (`cuda` alone is GPU 0).
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.trim() {
            "cpu" => Ok(DeviceId::Cpu),
            "cuda" => Ok(DeviceId::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceId::Cuda)
                .ok_or_else(|| DeviceError::Syntax(s.to_string())),
        }
    }
}

/// What a worker reports of one of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `cpu` or `cuda:N`.
    pub id: String,
    pub kind: DeviceKind,
    /// The processor's or the GPU's model name.
    pub name: String,
    /// The machine's memory for the CPU, the GPU's own memory for a GPU.
    pub memory_bytes: Option<u64>,
}

/// A `--devices` value: which devices this worker trains on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// Every GPU the CUDA build sees (`cuda`).
    AllGpus,
    /// These GPUs (`cuda:0,1` or `cuda:0,cuda:1`).
    Gpus(Vec<usize>),
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let s = s.trim();
        match s {
            "cpu" => return Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => return Ok(DeviceChoice::AllGpus),
            _ => {}
        }
        let list = s
            .strip_prefix("cuda:")
            .ok_or_else(|| DeviceError::Syntax(s.to_string()))?;
        let mut gpus = Vec::new();
        for part in list.split(',') {
            let n = part.trim().strip_prefix("cuda:").unwrap_or(part.trim());
            let n: usize = n.parse().map_err(|_| DeviceError::Syntax(s.to_string()))?;
            if !gpus.contains(&n) {
                gpus.push(n);
            }
        }
        Ok(DeviceChoice::Gpus(gpus))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("`{0}` is not a device list: use `cpu`, `cuda` (every GPU) or `cuda:0,1`")]
    Syntax(String),
    #[error("GPU cuda:{0} does not exist: this machine has {1} GPU(s)")]
    NoSuchGpu(usize, usize),
    #[error("no GPU can be used: {0}")]
    NoGpu(String),
}

/// The devices this process trains on, from `--devices` (`None`: every GPU the CUDA build sees,
/// else the CPU). Naming GPUs on a machine or build that has none is an error, not a silent CPU.
pub fn resolve(choice: Option<&DeviceChoice>) -> Result<Vec<DeviceId>, DeviceError> {
    match choice {
        Some(DeviceChoice::Cpu) => Ok(vec![DeviceId::Cpu]),
        None => Ok(match cuda::count() {
            Ok(n) if n > 0 => (0..n).map(DeviceId::Cuda).collect(),
            _ => vec![DeviceId::Cpu],
        }),
        Some(DeviceChoice::AllGpus) => match cuda::count().map_err(DeviceError::NoGpu)? {
            0 => Err(DeviceError::NoGpu("the CUDA driver sees no GPU".into())),
            n => Ok((0..n).map(DeviceId::Cuda).collect()),
        },
        Some(DeviceChoice::Gpus(list)) => {
            let n = cuda::count().map_err(DeviceError::NoGpu)?;
            list.iter()
                .map(|&g| {
                    if g < n {
                        Ok(DeviceId::Cuda(g))
                    } else {
                        Err(DeviceError::NoSuchGpu(g, n))
                    }
                })
                .collect()
        }
    }
}

/// One device per worker slot: a slot per GPU, or `cpu_slots` slots sharing the CPU. No slots at
/// all when `cpu_slots` is 0 (`--worker-slots 0` runs the API alone).
pub fn slot_devices(devices: &[DeviceId], cpu_slots: usize) -> Vec<DeviceId> {
    if cpu_slots == 0 {
        return Vec::new();
    }
    let gpus: Vec<DeviceId> = devices
        .iter()
        .copied()
        .filter(|d| d.kind() == DeviceKind::Gpu)
        .collect();
    if gpus.is_empty() {
        vec![DeviceId::Cpu; cpu_slots]
    } else {
        gpus
    }
}

/// The CUDA driver's answers, through candle's own cudarc; without the `cuda` feature there are
/// no GPUs. No context is created (a context holds hundreds of MB of GPU memory): the driver's
/// device queries need only `cuInit`.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::devices::DeviceError;
    use candle_core::cuda_backend::cudarc::driver::result;

    pub fn count() -> Result<usize, String> {
        result::init().map_err(|e| format!("the CUDA driver did not start: {e}"))?;
        result::device::get_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| e.to_string())
    }

    pub fn describe(n: usize) -> Result<(String, u64), DeviceError> {
        let gpus = count().map_err(DeviceError::NoGpu)?;
        if n >= gpus {
            return Err(DeviceError::NoSuchGpu(n, gpus));
        }
        let err = |e: result::DriverError| DeviceError::NoGpu(e.to_string());
        let dev = result::device::get(n as i32).map_err(err)?;
        let name = result::device::get_name(dev).map_err(err)?;
        // SAFETY: `dev` came from `device::get` just above.
        let memory = unsafe { result::device::total_mem(dev) }.map_err(err)?;
        Ok((name, memory as u64))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use crate::devices::DeviceError;

    pub fn count() -> Result<usize, String> {
        Err("this wick was built without the `cuda` feature".into())
    }

    pub fn describe(n: usize) -> Result<(String, u64), DeviceError> {
        let _ = n;
        Err(DeviceError::NoGpu(count().unwrap_err()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::AllGpus
        );
        assert_eq!(
            "cuda:0,1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Gpus(vec![0, 1])
        );
        assert_eq!(
            "cuda:1,cuda:0,1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Gpus(vec![1, 0])
        );
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:0,", "cpu,cuda:0", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.to_string().contains("not a device list"), "{bad}: {e}");
        }
        assert_eq!("cuda:3".parse::<DeviceId>().unwrap(), DeviceId::Cuda(3));
        assert_eq!("cpu".parse::<DeviceId>().unwrap(), DeviceId::Cpu);
        assert_eq!(DeviceId::Cuda(2).to_string(), "cuda:2");
        assert!("gpu:0".parse::<DeviceId>().is_err());
    }

    #[test]
    fn one_slot_per_gpu_or_the_cpu_slots() {
        let gpus = [DeviceId::Cuda(0), DeviceId::Cuda(1)];
        assert_eq!(slot_devices(&gpus, 1), gpus.to_vec());
        assert_eq!(slot_devices(&gpus, 0), vec![]);
        assert_eq!(slot_devices(&[DeviceId::Cpu], 3), vec![DeviceId::Cpu; 3]);
    }

    /// The CPU build has no GPU: the default is the CPU, and naming a GPU is a clear error.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_the_cpu_is_the_device() {
        assert_eq!(resolve(None).unwrap(), vec![DeviceId::Cpu]);
        assert_eq!(
            resolve(Some(&DeviceChoice::Cpu)).unwrap(),
            vec![DeviceId::Cpu]
        );
        let e = resolve(Some(&DeviceChoice::Gpus(vec![0]))).unwrap_err();
        assert!(e.to_string().contains("without the `cuda` feature"), "{e}");
        let e = DeviceId::Cuda(0).open().unwrap_err();
        assert!(e.to_string().contains("without the `cuda` feature"), "{e}");
        let cpu = DeviceId::Cpu.describe().unwrap();
        assert_eq!((cpu.id.as_str(), cpu.kind), ("cpu", DeviceKind::Cpu));
        assert!(cpu.memory_bytes.unwrap() > 1 << 28, "{cpu:?}");
        assert!(!cpu.name.is_empty());
    }
}
