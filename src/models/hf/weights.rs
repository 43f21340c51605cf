//! Memory-mapped safetensors weights of a model directory: `model.safetensors`, or the shards
//! listed in `model.safetensors.index.json`.

use crate::base::{Error, Result, TorchContext};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn st_kind(d: safetensors::Dtype) -> Result<Kind> {
    Ok(match d {
        safetensors::Dtype::F32 => Kind::Float,
        safetensors::Dtype::F16 => Kind::Half,
        safetensors::Dtype::BF16 => Kind::BFloat16,
        safetensors::Dtype::F64 => Kind::Double,
        safetensors::Dtype::I64 => Kind::Int64,
        safetensors::Dtype::U8 => Kind::Uint8,
        other => {
            return Err(Error::Config(format!(
                "safetensors dtype {other:?} is not supported"
            )))
        }
    })
}

/// Memory-mapped safetensors files of a model directory, by tensor name.
pub struct Weights {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    index: BTreeMap<String, usize>,
}

impl Weights {
    /// Opens `model.safetensors` or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Weights> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| Error::Io { path: p, source }
        };
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else {
            let idx = dir.join("model.safetensors.index.json");
            if !idx.exists() {
                return Err(Error::Config(format!(
                    "{} has neither model.safetensors nor model.safetensors.index.json",
                    dir.display()
                )));
            }
            let text = crate::base::files::read_small_file(&idx)?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::bad_file(idx.display(), e.to_string()))?;
            let wm = v
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| Error::bad_file(idx.display(), "no weight_map"))?;
            let mut fs: Vec<String> = wm
                .values()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            fs.sort();
            fs.dedup();
            fs.into_iter().map(|f| dir.join(f)).collect()
        };
        let mut maps = vec![];
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(io(f))?;
            // SAFETY: the file is only read; pzt does not write model files it has mapped.
            let mm = unsafe { memmap2::Mmap::map(&file) }.map_err(io(f))?;
            let st = safetensors::SafeTensors::deserialize(&mm).map_err(|e| {
                Error::bad_file(f.display(), format!("not a safetensors file: {e:?}"))
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((f.clone(), mm));
        }
        Ok(Weights { maps, index })
    }

    /// Tensor names.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// Whether the checkpoint stores `name` in MXFP4 (`name_blocks` and `name_scales`).
    pub fn packed(&self, name: &str) -> bool {
        !self.index.contains_key(name)
            && self.index.contains_key(&format!("{name}_blocks"))
            && self.index.contains_key(&format!("{name}_scales"))
    }

    /// One tensor (copied out of the map into a libtorch tensor); a tensor stored in MXFP4
    /// ([`Weights::packed`]) is dequantized to float32 ([`super::mxfp4`]).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        if self.packed(name) {
            let blocks = self.read(&format!("{name}_blocks"))?;
            let scales = self.read(&format!("{name}_scales"))?;
            return super::mxfp4::dequantize(name, &blocks, &scales);
        }
        self.read(name)
    }

    /// One stored tensor.
    fn read(&self, name: &str) -> Result<Tensor> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| Error::Config(format!("the checkpoint has no tensor `{name}`")))?;
        let (path, mm) = &self.maps[i];
        let st = safetensors::SafeTensors::deserialize(mm)
            .map_err(|e| Error::bad_file(path.display(), format!("{e:?}")))?;
        let view = st
            .tensor(name)
            .map_err(|e| Error::bad_file(path.display(), format!("`{name}`: {e:?}")))?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let data = view.data();
        let t = Tensor::f_from_data_size(data, &shape, st_kind(view.dtype())?)
            .ctx(format!("read `{name}`"))?;
        // The bytes are copied: drop the mapped pages from this process's resident set so that
        // loading never holds the file's pages and the parameters at once. (The file is only
        // read, so the pages are simply re-read from disk if touched again.)
        let page = 4096usize;
        let offset = data.as_ptr() as usize - mm.as_ptr() as usize;
        let start = offset / page * page;
        let end = offset + data.len();
        if end > start {
            // SAFETY: a private read-only file mapping; MADV_DONTNEED only drops clean pages.
            let _ = unsafe {
                mm.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        Ok(t)
    }
}
