//! Files from the Hugging Face Hub through `hf-hub`, so the standard cache (`HF_HOME`,
//! else `~/.cache/huggingface`) is read and filled exactly as Python's `huggingface_hub`
//! does. A local directory works wherever a Hub id does.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::DataError;
use crate::tokenize::TokenizerFiles;

/// Where files come from: the Hub cache, and the Hub itself unless offline.
#[derive(Debug, Clone)]
pub struct Hub {
    cache: Cache,
    revision: String,
    offline: bool,
}

/// The files of a model directory in Hugging Face layout.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: TokenizerFiles,
    /// `model.safetensors`, else `pytorch_model.bin`.
    pub weights: PathBuf,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode, as huggingface_hub reads it.
fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl Hub {
    /// The cache named by `HF_HOME`, at `revision` (a branch, tag or commit); offline when
    /// `offline` is set or `HF_HUB_OFFLINE=1`.
    pub fn from_env(revision: &str, offline: bool) -> Self {
        Self {
            cache: Cache::from_env(),
            revision: revision.to_string(),
            offline: offline || offline_from_env(),
        }
    }

    /// The cache folder (`$HF_HOME/hub`).
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// The local path of `filename` in `repo` (a Hub id or a local directory), downloading
    /// it into the cache when it is not there and the Hub may be used.
    pub fn file(&self, repo: &str, kind: RepoType, filename: &str) -> Result<PathBuf, DataError> {
        let local = Path::new(repo);
        if local.is_dir() {
            let path = local.join(filename);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(DataError::NotFound(format!(
                    "{} has no {filename}",
                    local.display()
                )))
            };
        }
        let repo_ref = Repo::with_revision(repo.to_string(), kind, self.revision.clone());
        if let Some(path) = self.cached(&repo_ref, filename) {
            return Ok(path);
        }
        let kind_name = match kind {
            RepoType::Dataset => "dataset",
            RepoType::Space => "space",
            _ => "model",
        };
        if self.offline {
            return Err(DataError::NotFound(format!(
                "{kind_name} `{repo}` (revision {}): file {filename} is not in the Hugging Face \
                 cache at {} and offline mode is on (HF_HUB_OFFLINE or --offline); download it \
                 with network access first (e.g. `huggingface-cli download {}{repo} {filename}`), \
                 point HF_HOME at a cache that has it, or pass a local directory",
                self.revision,
                self.cache.path().display(),
                if kind_name == "dataset" {
                    "--repo-type dataset "
                } else {
                    ""
                },
            )));
        }
        let api = ApiBuilder::from_cache(self.cache.clone())
            .with_progress(false)
            .build()
            .map_err(|e| DataError::Hub(format!("cannot start the Hub client: {e}")))?;
        api.repo(repo_ref).get(filename).map_err(|e| {
            // hf-hub reports a missing file as the server's 404 ("status code 404").
            if e.to_string().contains("status code 404") {
                return DataError::NotFound(format!(
                    "{kind_name} `{repo}` (revision {}) has no {filename}",
                    self.revision
                ));
            }
            DataError::Hub(format!(
                "{kind_name} `{repo}` (revision {}): cannot download {filename}: {e}; check the \
                 id and your network, or set HF_HUB_OFFLINE=1 to use only the cache at {}",
                self.revision,
                self.cache.path().display()
            ))
        })
    }

    /// A cached file; a commit revision is looked up in `snapshots/` directly, since only
    /// branches and tags have a `refs/` entry.
    fn cached(&self, repo: &Repo, filename: &str) -> Option<PathBuf> {
        if let Some(path) = self.cache.repo(repo.clone()).get(filename) {
            return Some(path);
        }
        let is_commit =
            self.revision.len() == 40 && self.revision.bytes().all(|b| b.is_ascii_hexdigit());
        let path = self
            .cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(&self.revision)
            .join(filename);
        (is_commit && path.is_file()).then_some(path)
    }

    /// A model's config, tokenizer and weights.
    pub fn model_files(&self, model: &str) -> Result<ModelFiles, DataError> {
        let config = self.file(model, RepoType::Model, "config.json")?;
        let tokenizer = self.tokenizer_files(model)?;
        let weights = self
            .file(model, RepoType::Model, "model.safetensors")
            .or_else(|_| self.file(model, RepoType::Model, "pytorch_model.bin"))
            .map_err(|e| match e {
                DataError::NotFound(_) if Path::new(model).is_dir() => DataError::NotFound(
                    format!("{model} has neither model.safetensors nor pytorch_model.bin"),
                ),
                other => other,
            })?;
        Ok(ModelFiles {
            config,
            tokenizer,
            weights,
        })
    }

    /// `tokenizer.json`, else `vocab.txt`, else `vocab.json` and `merges.txt`, else `spm.model`
    /// (the first two and the last with `tokenizer_config.json` where there is one).
    fn tokenizer_files(&self, model: &str) -> Result<TokenizerFiles, DataError> {
        let file = |name| self.file(model, RepoType::Model, name);
        let missing =
            |result: &Result<PathBuf, DataError>| matches!(result, Err(DataError::NotFound(_)));
        let json = file("tokenizer.json");
        if !missing(&json) {
            return json.map(TokenizerFiles::Json);
        }
        let config = || {
            let config = file("tokenizer_config.json");
            if missing(&config) {
                Ok(None)
            } else {
                config.map(Some)
            }
        };
        let vocab = file("vocab.txt");
        if !missing(&vocab) {
            return Ok(TokenizerFiles::WordPiece {
                vocab: vocab?,
                config: config()?,
            });
        }
        let (vocab, merges) = (file("vocab.json"), file("merges.txt"));
        if !missing(&vocab) && !missing(&merges) {
            return Ok(TokenizerFiles::ByteLevelBpe {
                vocab: vocab?,
                merges: merges?,
            });
        }
        let spm = file("spm.model");
        if !missing(&spm) {
            return Ok(TokenizerFiles::SentencePiece {
                model: spm?,
                config: config()?,
            });
        }
        Err(DataError::NotFound(format!(
            "{model} has no tokenizer.json, vocab.txt, vocab.json with merges.txt, or spm.model: \
             burnbert needs one of them (for another tokenizer, save it with transformers' \
             save_pretrained to get a tokenizer.json)"
        )))
    }

    /// A file of a dataset repository, such as `mrpc/train-00000-of-00001.parquet` of `nyu-mll/glue`.
    pub fn dataset_file(&self, dataset: &str, filename: &str) -> Result<PathBuf, DataError> {
        self.file(dataset, RepoType::Dataset, filename)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_at(dir: &Path, offline: bool) -> Hub {
        Hub {
            cache: Cache::new(dir.to_path_buf()),
            revision: "main".into(),
            offline,
        }
    }

    #[test]
    fn reads_the_standard_cache_layout() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--org--name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        std::fs::write(
            repo.join("snapshots").join(commit).join("config.json"),
            "{}",
        )
        .unwrap();

        let hub = hub_at(dir.path(), true);
        let path = hub
            .file("org/name", RepoType::Model, "config.json")
            .unwrap();
        assert!(path.ends_with(format!("snapshots/{commit}/config.json")));

        let pinned = Hub {
            revision: commit.into(),
            ..hub.clone()
        };
        assert_eq!(
            pinned
                .file("org/name", RepoType::Model, "config.json")
                .unwrap(),
            path
        );
    }

    #[test]
    fn offline_miss_names_repo_file_and_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let err = hub_at(dir.path(), true)
            .dataset_file("nyu-mll/glue", "mrpc/test-00000-of-00001.parquet")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataset `nyu-mll/glue`"), "{err}");
        assert!(err.contains("mrpc/test-00000-of-00001.parquet"), "{err}");
        assert!(
            err.contains("huggingface-cli download --repo-type dataset"),
            "{err}"
        );
    }

    #[test]
    fn local_directories_work_like_hub_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let hub = hub_at(dir.path(), true);
        let repo = dir.path().to_str().unwrap();
        assert!(hub.file(repo, RepoType::Model, "config.json").is_ok());
        let err = hub.model_files(repo).unwrap_err().to_string();
        assert!(err.contains("has no tokenizer.json"), "{err}");
    }
}
