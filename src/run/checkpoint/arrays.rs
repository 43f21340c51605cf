//! Files of named arrays (`pzt capture`, `pzt isolate`): a safetensors file whose metadata
//! entry `axes` is a JSON object giving each tensor's axis names (its leading axes; any further
//! axes are positional), with any other metadata entries beside it. Values keep their dtype.

use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// The most bytes of a safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

fn bad(path: &Path, message: String) -> Error {
    Error::BadFile {
        path: path.display().to_string(),
        line: None,
        message,
    }
}

/// Writes `arrays` to `path` with the metadata `meta` (and the `axes` entry).
pub fn write(
    path: &Path,
    arrays: &[(String, NamedTensor)],
    meta: &BTreeMap<String, String>,
) -> Result<()> {
    let mut axes = serde_json::Map::new();
    let mut cpu = Vec::with_capacity(arrays.len());
    for (name, t) in arrays {
        axes.insert(name.clone(), serde_json::json!(t.names()));
        let c = t
            .tensor()
            .f_to_device(tch::Device::Cpu)
            .and_then(|x| x.f_contiguous())
            .ctx(format!("array `{name}`"))?;
        cpu.push((name.clone(), c));
    }
    let mut info: HashMap<String, String> =
        meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    info.insert("axes".into(), serde_json::Value::Object(axes).to_string());
    let mut bytes: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = vec![];
    for (name, t) in &cpu {
        let dtype = match t.kind() {
            tch::Kind::Float => safetensors::Dtype::F32,
            tch::Kind::Double => safetensors::Dtype::F64,
            tch::Kind::Half => safetensors::Dtype::F16,
            tch::Kind::BFloat16 => safetensors::Dtype::BF16,
            tch::Kind::Int64 => safetensors::Dtype::I64,
            tch::Kind::Int => safetensors::Dtype::I32,
            tch::Kind::Bool => safetensors::Dtype::BOOL,
            tch::Kind::Uint8 => safetensors::Dtype::U8,
            other => {
                return Err(Error::Config(format!(
                    "array `{name}`: dtype {other:?} cannot be written"
                )))
            }
        };
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        t.f_copy_data_u8(&mut buf, t.numel())
            .ctx(format!("array `{name}`"))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        bytes.push((name.clone(), buf, dtype, shape));
    }
    let views = bytes
        .iter()
        .map(|(name, buf, dtype, shape)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), buf)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Config(format!("array `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::base::outputs::write_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, &Some(info), tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(source) => Error::Io {
                path: path.display().to_string(),
                source,
            },
            other => bad(path, other.to_string()),
        })
    })
}

/// The metadata of the safetensors file `path` (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    // Checked before opening: opening a FIFO would wait for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(bad(path, "not a regular file".into()));
    }
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        bad(
            path,
            "not a safetensors file (shorter than its header)".into(),
        )
    })?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(bad(
            path,
            format!("not a safetensors file (a header of {n} bytes)"),
        ));
    }
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head)
        .map_err(|_| bad(path, "not a safetensors file (the header is cut)".into()))?;
    let j: serde_json::Value = serde_json::from_slice(&head)
        .map_err(|e| bad(path, format!("not a safetensors file (header: {e})")))?;
    let mut out = BTreeMap::new();
    if let Some(m) = j.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// Named arrays, as `(name, array)`.
pub type Arrays = Vec<(String, NamedTensor)>;

/// Reads a file of named arrays: the arrays in name order, and the metadata (without `axes`).
pub fn read(path: &Path) -> Result<(Arrays, BTreeMap<String, String>)> {
    let mut meta = read_metadata(path)?;
    let axes: serde_json::Map<String, serde_json::Value> = match meta.remove("axes") {
        Some(a) => serde_json::from_str(&a).map_err(|e| {
            bad(
                path,
                format!("the `axes` metadata is not a JSON object: {e}"),
            )
        })?,
        None => Default::default(),
    };
    let tensors = tch::Tensor::read_safetensors(path).map_err(|e| bad(path, e.to_string()))?;
    let mut out = vec![];
    for (name, t) in tensors {
        let names: Vec<String> = axes
            .get(&name)
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default();
        let nt = NamedTensor::from_parts(t, names)
            .map_err(|e| bad(path, format!("array `{name}`: {e}")))?;
        out.push((name, nt));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_with_axes_and_metadata(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("pzt-arrays-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("a.safetensors");
        let x = NamedTensor::wrap(
            tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu)).reshape([2, 3]),
            &["seq", "embedding"],
        )?;
        let ids = NamedTensor::wrap(tch::Tensor::from_slice(&[1i64, 2]), &["seq"])?;
        let meta = BTreeMap::from([("tokens".to_string(), "1 2".to_string())]);
        write(&p, &[("b.x".into(), x.clone()), ("a".into(), ids)], &meta)?;
        let (arrays, m) = read(&p)?;
        assert_eq!(m, meta);
        assert_eq!(arrays[0].0, "a");
        assert_eq!(arrays[1].1.names(), ["seq", "embedding"]);
        assert!(arrays[1].1.tensor().equal(x.tensor()));
        assert_eq!(arrays[0].1.kind(), tch::Kind::Int64);
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\xffjunk")?;
        let msg = read(&p).err().map(|e| e.to_string());
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains("not a safetensors file")),
            "{msg:?}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
