//! TensorBoard event files for `train --report-to tensorboard`, as
//! `run_glue_no_trainer.py --with_tracking` writes them: the scalars of every step
//! (`train/loss`, `train/learning_rate`, `train/samples_per_second`) and of every epoch
//! (`train/epoch_loss`, `eval/<metric>`).
//!
//! An event file is a TFRecord file of `Event` protocol buffers. Written here rather than
//! with a crate: the published TensorBoard writers for Rust are unmaintained and bring in an
//! old protobuf runtime, while the format needs about forty lines over `prost` (protocol
//! buffers) and `crc32c` (the record checksums), which burnbert's dependencies already build.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use burnbert_eval::log::Record;
use prost::Message;

/// `tensorflow.Event` (tensorboard/compat/proto/event.proto), the fields burnbert writes.
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    /// The first event of a file: the format's version.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary` (tensorboard/compat/proto/summary.proto).
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value`: a scalar.
#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, tag = "2")]
    simple_value: f32,
}

/// Appends events to one TensorBoard event file.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), named as TensorBoard looks for them.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!(
            "events.out.tfevents.{}.burnbert.{}",
            now.as_secs(),
            std::process::id()
        ));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = Self {
            file: BufWriter::new(file),
            path,
        };
        writer.write(&Event {
            wall_time: now.as_secs_f64(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(writer)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a log record's scalars as one event, and flushes it so that a running
    /// TensorBoard sees it.
    pub fn record(&mut self, record: &Record) -> std::io::Result<()> {
        let (step, scalars): (usize, Vec<(String, f64)>) = match record {
            Record::Step(s) => (
                s.step,
                vec![
                    ("train/loss".into(), s.loss),
                    ("train/learning_rate".into(), s.lr),
                    ("train/samples_per_second".into(), s.samples_per_second),
                ],
            ),
            // An epoch's scalars are plotted against the epoch, as the course's
            // `accelerator.log(..., step=epoch)` does.
            Record::Epoch(e) => (
                e.epoch,
                std::iter::once(("train/epoch_loss".into(), e.train_loss))
                    .chain(
                        e.metrics
                            .iter()
                            .map(|(name, &value)| (format!("eval/{name}"), value)),
                    )
                    .collect(),
            ),
        };
        let wall_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let value = scalars
            .into_iter()
            .map(|(tag, value)| SummaryValue {
                tag,
                simple_value: value as f32,
            })
            .collect();
        self.write(&Event {
            wall_time,
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })?;
        self.file.flush()
    }

    /// One TFRecord: the length, its masked CRC-32C, the data, the data's masked CRC-32C.
    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        let data = event.encode_to_vec();
        let length = (data.len() as u64).to_le_bytes();
        self.file.write_all(&length)?;
        self.file.write_all(&masked_crc(&length).to_le_bytes())?;
        self.file.write_all(&data)?;
        self.file.write_all(&masked_crc(&data).to_le_bytes())
    }
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs
/// stays well distributed (tensorflow/core/lib/hash/crc32c.h, `Mask`).
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    /// The example of TensorFlow's `crc32c_test.cc`: 32 bytes of zeros have CRC-32C
    /// 0x8a9136aa, which TensorFlow's `Mask`, `((crc >> 15) | (crc << 17)) + 0xa282ead8`,
    /// turns into 0x0fd7fffa (worked by hand).
    #[test]
    fn masked_crc_is_tensorflows() {
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(super::masked_crc(&[0u8; 32]), 0x0fd7_fffa);
    }
}
