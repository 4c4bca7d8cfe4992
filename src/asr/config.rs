//! `whisper_config.json`: special token ids, prompts, suppress lists and model dimensions.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::AsrError;

/// Special token ids of one Whisper vocabulary.
#[derive(Debug, Clone, Deserialize)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub no_speech: u32,
    /// Starts the preceding-text context, before `sot`.
    pub startofprev: u32,
    pub notimestamps: u32,
    pub timestamp_begin: u32,
}

/// The model description written beside the ONNX files.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    pub multilingual: bool,
    pub special_tokens: SpecialTokens,
    pub n_vocab: usize,
    pub n_text_ctx: usize,
    pub n_text_layers: usize,
    pub d_model: usize,
    pub suppress_tokens: Vec<u32>,
    pub begin_suppress_tokens: Vec<u32>,
    #[serde(default)]
    pub lang_ids: BTreeMap<String, u32>,
}

impl WhisperConfig {
    /// Reads and checks the configuration file.
    pub fn load(path: &Path) -> Result<Self, AsrError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AsrError::Config(format!("{}: {e}", path.display())))?;
        let cfg: WhisperConfig = serde_json::from_str(&text)
            .map_err(|e| AsrError::Config(format!("{}: {e}", path.display())))?;
        cfg.check()
            .map_err(|e| AsrError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let st = &self.special_tokens;
        if st.timestamp_begin as usize >= self.n_vocab || st.eot as usize >= self.n_vocab {
            return Err("special token ids outside the vocabulary".into());
        }
        if self.multilingual && self.lang_ids.is_empty() {
            return Err("multilingual model without lang_ids".into());
        }
        if self.n_text_layers == 0 || self.d_model == 0 {
            return Err("zero layers or width".into());
        }
        Ok(())
    }

    /// Token id of a language code, for multilingual models.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.lang_ids.get(code).copied()
    }

    /// Language code of a language token.
    pub fn language_of(&self, token: u32) -> Option<&str> {
        self.lang_ids
            .iter()
            .find(|(_, t)| **t == token)
            .map(|(c, _)| c.as_str())
    }
}
