//! Devices: the ones libtorch sees, the one `auto` means, and the one parser of device names
//! (`auto`, `cpu`, `cuda`) that every command and recipe key uses.

use tch::Device;

/// The devices libtorch sees, CPU first.
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        for i in 0..tch::Cuda::device_count() {
            v.push(Device::Cuda(i as usize));
        }
    }
    v
}

/// The device pzt uses for `"auto"`: the first GPU when there is one, else the CPU.
pub fn auto_device() -> Device {
    Device::cuda_if_available()
}

/// Why a device name was refused. Callers phrase the message for their flag or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// `cuda` on a machine where libtorch sees no CUDA device.
    NoCuda,
    /// A name that is not `auto`, `cpu` or `cuda`.
    Unknown(String),
}

/// Parses `auto` (a GPU when there is one), `cpu` or `cuda` (the first GPU).
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    match name {
        "auto" => Ok(auto_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(DeviceError::NoCuda),
        other => Err(DeviceError::Unknown(other.to_string())),
    }
}

/// A device's name in messages: `cpu`, `cuda:0`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
        assert_eq!(parse_device("tpu"), Err(DeviceError::Unknown("tpu".into())));
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
        assert_eq!(device_name(Device::Cpu), "cpu");
    }
}
