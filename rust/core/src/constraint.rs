//! Constrained output: which tokens keep a row's text inside a JSON schema, a regex, a list of
//! choices or a Lark grammar, computed per step with the `llguidance` engine.
//!
//! - [`ConstraintEnv`]: built once per model from the bytes of every token id (the Python side
//!   decodes the tokenizer's vocabulary into bytes) and the EOS ids; it holds llguidance's token
//!   trie and parser factory.
//! - [`Constraint`]: a compiled constraint ([`ConstraintEnv::compile`]); compiling is where an
//!   invalid schema, regex or grammar is refused, before any token is generated.
//! - [`RowMatcher`]: one row's parser state: its allowed-token mask, consuming the chosen token,
//!   whether the constraint is complete. Cloned for beams and sampled copies.
//! - [`ConstraintRows`]: the matchers of a generation's rows (`None` for an unconstrained row),
//!   with the per-step calls the decoding loop makes: mask a `[rows, vocab]` score array in place
//!   (rows in parallel), consume the chosen tokens, follow the session's row reordering.
//!
//! A complete constraint (nothing but the end may follow) leaves only EOS allowed, so the row
//! ends with EOS as an unconstrained one does (and as outlines' and llama.cpp's masks make it).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use rayon::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};

/// What a constraint is given as (the Python options of the same names).
#[derive(Debug, Clone)]
pub enum ConstraintSpec {
    /// A JSON schema, as JSON text; `{"type": "object"}` for any JSON object.
    JsonSchema(String),
    /// A regular expression the whole output must match (Rust `regex` syntax).
    Regex(String),
    /// The output is exactly one of these strings.
    Choices(Vec<String>),
    /// A grammar in llguidance's Lark syntax.
    Grammar(String),
}

/// JSON output's layout unless a schema says otherwise (its `x-guidance` key): one line, with
/// Python's `json.dumps` separators. Flexible whitespace lets small models emit newlines and
/// spaces without end, which would spend the token budget on nothing.
const JSON_LAYOUT: &str =
    r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}"#;

/// The tokenizer side of constraints for one model: built once, shared by every constraint.
pub struct ConstraintEnv {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
    eos: Vec<u32>,
}

impl ConstraintEnv {
    /// `token_bytes[id]`: the bytes token `id` stands for (empty for ids the tokenizer does not
    /// have, e.g. the padding rows of a model's embedding: such tokens are never allowed);
    /// `special`: ids of special tokens (never allowed unless a grammar names them);
    /// `eos`: the ids that end a sequence (allowed where the constraint may end).
    pub fn new(mut token_bytes: Vec<Vec<u8>>, special: &[u32], eos: &[u32]) -> Result<Self> {
        let vocab_size = token_bytes.len();
        if vocab_size == 0 {
            return Err(Error::InvalidInput(
                "a constraint environment needs a vocabulary".into(),
            ));
        }
        for &id in special.iter().chain(eos) {
            if id as usize >= vocab_size {
                return Err(Error::InvalidInput(format!(
                    "special or EOS token id {id} is outside the vocabulary of {vocab_size} tokens"
                )));
            }
        }
        // llguidance's convention for special tokens: their bytes start with 0xFF, which no UTF-8
        // text contains, so no text constraint can produce them.
        for &id in special.iter().chain(eos) {
            let bytes = &mut token_bytes[id as usize];
            if bytes.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                bytes.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        if eos.is_empty() {
            return Err(Error::InvalidInput(
                "constrained output needs the model's EOS token id (eos_token_id): the row ends with it".into(),
            ));
        }
        let info = TokRxInfo::new(vocab_size as u32, eos[0]);
        // The trie's builder asserts its invariants; a vocabulary that breaks one is refused
        // here rather than unwinding into the caller.
        let trie = llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ok(TokTrie::from(&info, &token_bytes).with_eos_tokens(eos))
        }))
        .map_err(|e| Error::InvalidInput(format!("cannot index the vocabulary: {e}")))?;
        let tok_env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&tok_env)
            .map_err(|e| Error::InvalidInput(format!("cannot index the vocabulary: {e}")))?;
        factory.quiet();
        Ok(ConstraintEnv {
            factory: Arc::new(factory),
            vocab_size,
            eos: eos.to_vec(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Compiles `spec`; an invalid schema, regex or grammar is an [`Error::InvalidInput`] with
    /// the engine's message.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint> {
        let grammar = grammar_of(spec)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| invalid(spec, &e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(spec, &e));
        }
        Ok(Constraint {
            template: matcher,
            vocab_size: self.vocab_size,
            eos: self.eos.clone(),
        })
    }
}

fn invalid(spec: &ConstraintSpec, msg: &str) -> Error {
    let what = match spec {
        ConstraintSpec::JsonSchema(_) => "json_schema",
        ConstraintSpec::Regex(_) => "regex",
        ConstraintSpec::Choices(_) => "choices",
        ConstraintSpec::Grammar(_) => "grammar",
    };
    Error::InvalidInput(format!("invalid {what}: {msg}"))
}

fn grammar_of(spec: &ConstraintSpec) -> Result<TopLevelGrammar> {
    Ok(match spec {
        ConstraintSpec::JsonSchema(text) => {
            let mut schema: Value =
                serde_json::from_str(text).map_err(|e| invalid(spec, &format!("not JSON: {e}")))?;
            if let Value::Object(map) = &mut schema {
                if !map.contains_key("x-guidance") {
                    let layout: Value = serde_json::from_str(JSON_LAYOUT).expect("valid constant");
                    map.insert("x-guidance".into(), layout);
                }
            } else if !schema.is_boolean() {
                return Err(invalid(spec, "a JSON schema is an object (or true/false)"));
            }
            TopLevelGrammar::from_json_schema(schema)
        }
        ConstraintSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
        ConstraintSpec::Choices(choices) => {
            if choices.is_empty() {
                return Err(invalid(spec, "at least one choice is needed"));
            }
            let alternatives: Vec<String> = choices.iter().map(|c| escape_regex(c)).collect();
            TopLevelGrammar::from_regex(&format!("(?:{})", alternatives.join("|")))
        }
        ConstraintSpec::Grammar(text) => TopLevelGrammar::from_lark(text.clone()),
    })
}

/// `text` as a regex matching exactly it (`regex_syntax::escape`'s set of meta characters).
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.'
                | '+'
                | '*'
                | '?'
                | '('
                | ')'
                | '|'
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
                | '$'
                | '#'
                | '&'
                | '-'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A compiled constraint: the start state every row constrained by it begins from.
#[derive(Clone)]
pub struct Constraint {
    template: Matcher,
    vocab_size: usize,
    eos: Vec<u32>,
}

impl Constraint {
    /// A fresh matcher at the start of the output.
    pub fn matcher(&self) -> RowMatcher {
        RowMatcher {
            inner: self.template.clone(),
            vocab_size: self.vocab_size,
            eos: self.eos.clone(),
            dead: false,
        }
    }
}

/// One row's position in its constraint.
#[derive(Clone)]
pub struct RowMatcher {
    inner: Matcher,
    vocab_size: usize,
    eos: Vec<u32>,
    /// Took a token its constraint forbids (a beam search filler): nothing is allowed any more.
    dead: bool,
}

impl RowMatcher {
    /// The tokens allowed next; only the EOS ids once the constraint is complete.
    pub fn allowed(&mut self) -> Result<SimpleVob> {
        if self.dead {
            return Ok(SimpleVob::alloc(self.vocab_size));
        }
        // Sized by the trie, which holds `vocab_size` tokens. The engine fails when no token can
        // extend the text (a literal the vocabulary cannot spell, a grammar that needs a special
        // token): the row is then dead, with nothing allowed, which the caller reports.
        match self.inner.compute_mask_or_eos() {
            Ok(mask) => Ok(mask),
            Err(_) => {
                self.dead = true;
                Ok(SimpleVob::alloc(self.vocab_size))
            }
        }
    }

    /// Advances past `token`; a token the constraint does not allow is an error.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        if self.inner.is_stopped() && self.eos.contains(&token) {
            return Ok(()); // the EOS that ends a complete constraint
        }
        if token as usize >= self.vocab_size {
            return Err(Error::InvalidInput(format!(
                "token {token} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        self.inner
            .consume_token(token)
            .map_err(|e| Error::InvalidInput(format!("token {token} breaks the constraint: {e}")))
    }

    /// Whether the constraint allows `token` next.
    pub fn allows(&mut self, token: u32) -> bool {
        if self.dead || token as usize >= self.vocab_size {
            return false;
        }
        if self.inner.is_stopped() {
            return self.eos.contains(&token);
        }
        matches!(self.inner.validate_tokens(&[token]), Ok(1))
    }

    /// Whether the output so far is a complete match (EOS is allowed now).
    pub fn is_accepting(&mut self) -> bool {
        self.inner.is_accepting().unwrap_or(false)
    }

    /// Whether the constraint is complete: nothing but EOS may follow.
    pub fn is_stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// Takes back the last `tokens` tokens (a rejected draft of prompt lookup).
    pub fn rollback(&mut self, tokens: usize) -> Result<()> {
        self.inner
            .rollback(tokens)
            .map_err(|e| Error::InvalidInput(format!("constraint rollback: {e}")))
    }
}

/// The matchers of a generation's rows, indexed like the rows of its history (`None`: the row is
/// not constrained).
///
/// `passthrough`: tokens the model's options force outside the text (a forced BOS such as a
/// translation's language token, a forced EOS at the budget's end). A row whose scores allow
/// only one of them (a built-in processor forced it) is not masked, and such a token, when the
/// constraint does not allow it, is taken without advancing the constraint.
pub struct ConstraintRows {
    rows: Vec<Option<RowMatcher>>,
    passthrough: Vec<u32>,
}

/// What masking found for one row of the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskOutcome {
    /// Unconstrained row, or at least one allowed token kept a finite score.
    Ok,
    /// Every allowed token had `-inf` before masking (other options forbade them all): the row
    /// has no valid continuation.
    NoTokenLeft,
}

impl ConstraintRows {
    pub fn new(rows: Vec<Option<RowMatcher>>, passthrough: Vec<u32>) -> Self {
        ConstraintRows { rows, passthrough }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn is_constrained(&self, row: usize) -> bool {
        self.rows.get(row).is_some_and(Option::is_some)
    }

    pub fn get_mut(&mut self, row: usize) -> Option<&mut RowMatcher> {
        self.rows.get_mut(row).and_then(Option::as_mut)
    }

    /// Sets to `-inf` every score the constraint of its row forbids: `scores` `[active.len(),
    /// vocab]`, row `i` belonging to history row `active[i]`. Rows run in parallel (in the
    /// caller's rayon pool). A complete constraint whose EOS other options pushed to `-inf`
    /// (`min_new_tokens`) gets EOS back at score 0, so that the constraint still ends the row.
    pub fn mask(
        &mut self,
        scores: &mut [f32],
        vocab: usize,
        active: &[usize],
    ) -> Result<Vec<MaskOutcome>> {
        if vocab == 0 || scores.len() != active.len() * vocab {
            return Err(Error::InvalidInput(format!(
                "scores of {} values are not {} rows of {vocab}",
                scores.len(),
                active.len()
            )));
        }
        let passthrough = std::mem::take(&mut self.passthrough);
        let mut picked: Vec<Option<&mut RowMatcher>> = self.pick_mut(active)?;
        let work = |(row, m): (&mut [f32], &mut Option<&mut RowMatcher>)| match m {
            None => Ok(MaskOutcome::Ok),
            Some(_) if forced_passthrough(row, &passthrough) => Ok(MaskOutcome::Ok),
            Some(m) => mask_row(m, row),
        };
        let outcome = if active.len() == 1 {
            scores
                .chunks_mut(vocab)
                .zip(picked.iter_mut())
                .map(work)
                .collect()
        } else {
            scores
                .par_chunks_mut(vocab)
                .zip(picked.par_iter_mut())
                .map(work)
                .collect()
        };
        drop(picked);
        self.passthrough = passthrough;
        outcome
    }

    /// Advances history rows `active[i]` past `tokens[i]`; returns, per row, whether its
    /// constraint is now complete (`false` for unconstrained rows). A token the constraint
    /// forbids is an error when `strict`; otherwise the row allows nothing from then on (beam
    /// search's running beams may hold a dropped candidate's token).
    pub fn consume(&mut self, active: &[usize], tokens: &[u32], strict: bool) -> Result<Vec<bool>> {
        if active.len() != tokens.len() {
            return Err(Error::InvalidInput(format!(
                "{} rows but {} tokens",
                active.len(),
                tokens.len()
            )));
        }
        let passthrough = self.passthrough.clone();
        let picked = self.pick_mut(active)?;
        picked
            .into_iter()
            .zip(tokens)
            .map(|(m, &t)| {
                let Some(m) = m else { return Ok(false) };
                if m.dead {
                    return Ok(false);
                }
                if passthrough.contains(&t) && !m.allows(t) {
                    return Ok(m.is_stopped()); // a forced token outside the text
                }
                match m.consume(t) {
                    Ok(()) => Ok(m.is_stopped()),
                    Err(_) if !strict => {
                        m.dead = true;
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
            .collect()
    }

    /// The rows become `old[index[0]], old[index[1]], ...` (the session's reorder: beams that
    /// continue, copies of a row); a row taken twice is cloned.
    pub fn reorder(&mut self, index: &[usize]) -> Result<()> {
        if let Some(&bad) = index.iter().find(|&&i| i >= self.rows.len()) {
            return Err(Error::InvalidInput(format!(
                "row {bad} out of range for {} constrained rows",
                self.rows.len()
            )));
        }
        let mut uses = vec![0usize; self.rows.len()];
        for &i in index {
            uses[i] += 1;
        }
        let mut old: Vec<Option<Option<RowMatcher>>> = self.rows.drain(..).map(Some).collect();
        let mut rows = Vec::with_capacity(index.len());
        for &i in index {
            uses[i] -= 1;
            let m = if uses[i] == 0 {
                old[i]
                    .take()
                    .expect("each row is moved once, on its last use")
            } else {
                old[i].as_ref().expect("not yet moved").clone()
            };
            rows.push(m);
        }
        self.rows = rows;
        Ok(())
    }

    /// Mutable references to the matchers of rows `active` (distinct rows).
    fn pick_mut(&mut self, active: &[usize]) -> Result<Vec<Option<&mut RowMatcher>>> {
        let n = self.rows.len();
        let mut slots: Vec<Option<&mut Option<RowMatcher>>> =
            self.rows.iter_mut().map(Some).collect();
        active
            .iter()
            .map(|&r| {
                if r >= n {
                    return Err(Error::InvalidInput(format!(
                        "row {r} out of range for {n} constrained rows"
                    )));
                }
                let slot = slots[r]
                    .take()
                    .ok_or_else(|| Error::InvalidInput(format!("row {r} given twice")))?;
                Ok(slot.as_mut())
            })
            .collect()
    }
}

/// Whether `row`'s only finite score is one of the `passthrough` tokens (a processor forced it).
fn forced_passthrough(row: &[f32], passthrough: &[u32]) -> bool {
    let Some(&t) = passthrough
        .iter()
        .find(|&&t| row.get(t as usize).is_some_and(|s| s.is_finite()))
    else {
        return false;
    };
    row.iter().filter(|s| s.is_finite()).count() == 1 && row[t as usize].is_finite()
}

fn mask_row(m: &mut RowMatcher, row: &mut [f32]) -> Result<MaskOutcome> {
    let vocab = row.len().min(m.vocab_size);
    let mask = m.allowed()?;
    let words = mask.as_slice();
    let mut finite = false;
    for (w, chunk) in row[..vocab].chunks_mut(32).enumerate() {
        let bits = words[w];
        if bits == 0 {
            chunk.fill(f32::NEG_INFINITY);
            continue;
        }
        for (b, s) in chunk.iter_mut().enumerate() {
            if bits & (1 << b) == 0 {
                *s = f32::NEG_INFINITY;
            } else if *s > f32::NEG_INFINITY {
                finite = true;
            }
        }
    }
    // Logit columns past the tokenizer's vocabulary (padding of the embedding) are never text.
    row[vocab..].fill(f32::NEG_INFINITY);
    if !finite && !m.dead && m.is_stopped() {
        if let Some(&eos) = m.eos.first() {
            row[eos as usize] = 0.0;
            finite = true;
        }
    }
    Ok(if finite {
        MaskOutcome::Ok
    } else {
        MaskOutcome::NoTokenLeft
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level toy vocabulary: single characters, a few merges, and EOS (id 0, special).
    fn env() -> ConstraintEnv {
        let words: Vec<Vec<u8>> = [
            "<eos>", "a", "b", "c", "ab", "abc", "1", "2", "{", "}", "\"", ":", " ", ",", "x",
            "yes", "no", "n", "o",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect();
        ConstraintEnv::new(words, &[], &[0]).unwrap()
    }

    fn allowed(m: &mut RowMatcher) -> Vec<u32> {
        m.allowed().unwrap().to_list()
    }

    #[test]
    fn regex_mask_matches_hand_computed_sets() {
        let env = env();
        let c = env.compile(&ConstraintSpec::Regex("ab*c".into())).unwrap();
        let mut m = c.matcher();
        // "a", "ab", "abc" start a match; nothing else does.
        assert_eq!(allowed(&mut m), vec![1, 4, 5]);
        m.consume(4).unwrap(); // "ab"
        assert_eq!(allowed(&mut m), vec![2, 3]); // "b" or "c"
        assert!(!m.is_accepting());
        m.consume(3).unwrap(); // "c"
        assert!(m.is_accepting());
        assert!(m.is_stopped());
        assert_eq!(allowed(&mut m), vec![0]); // only EOS
        m.consume(0).unwrap();
    }

    #[test]
    fn choices_are_literals() {
        let env = env();
        let c = env
            .compile(&ConstraintSpec::Choices(vec![
                "yes".into(),
                "no".into(),
                "a.b".into(),
            ]))
            .unwrap();
        let mut m = c.matcher();
        assert_eq!(allowed(&mut m), vec![1, 15, 16, 17]); // a, yes, no, n
        m.consume(1).unwrap();
        // "." is literal: the toy vocabulary has no "." token, so nothing continues "a".
        assert!(allowed(&mut m).is_empty());
        assert!(m.dead);
    }

    #[test]
    fn json_schema_accepts_only_valid_objects() {
        let env = env();
        let schema =
            r#"{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}"#;
        let c = env
            .compile(&ConstraintSpec::JsonSchema(schema.into()))
            .unwrap();
        let mut m = c.matcher();
        assert_eq!(allowed(&mut m), vec![8]); // "{"
        for t in [8, 10, 14, 10, 11, 12, 1] {
            // `{"x": ` then "a" is no integer
            if t == 1 {
                assert!(m.consume(t).is_err());
                break;
            }
            m.consume(t).unwrap();
        }
        let mut m = c.matcher();
        for t in [8, 10, 14, 10, 11, 12, 6, 7, 9] {
            m.consume(t).unwrap(); // {"x": 12}
        }
        assert!(m.is_stopped());
    }

    #[test]
    fn invalid_constraints_are_input_errors() {
        let env = env();
        for spec in [
            ConstraintSpec::Regex("a(".into()),
            ConstraintSpec::JsonSchema("{not json".into()),
            ConstraintSpec::JsonSchema(r#"{"type": "frobnicate"}"#.into()),
            ConstraintSpec::Grammar("start: foo".into()),
            ConstraintSpec::Choices(vec![]),
        ] {
            let err = env.compile(&spec).err().expect("must fail");
            assert!(matches!(err, Error::InvalidInput(_)), "{spec:?}: {err}");
        }
    }

    #[test]
    fn lark_grammar_and_special_tokens() {
        let words: Vec<Vec<u8>> = ["<eos>", "<tool>", "a", "b"]
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        let env = ConstraintEnv::new(words, &[1], &[0]).unwrap();
        let c = env
            .compile(&ConstraintSpec::Grammar("start: (\"a\" | \"b\")+".into()))
            .unwrap();
        let mut m = c.matcher();
        assert_eq!(allowed(&mut m), vec![2, 3]); // the special <tool> is not text
        m.consume(2).unwrap();
        assert_eq!(allowed(&mut m), vec![0, 2, 3]);
    }

    #[test]
    fn rows_mask_consume_and_reorder() {
        let env = env();
        let c = env.compile(&ConstraintSpec::Regex("ab*c".into())).unwrap();
        let vocab = env.vocab_size();
        let mut rows = ConstraintRows::new(vec![Some(c.matcher()), None], vec![]);
        let mut scores = vec![1.0f32; 2 * vocab];
        let out = rows.mask(&mut scores, vocab, &[0, 1]).unwrap();
        assert_eq!(out, vec![MaskOutcome::Ok, MaskOutcome::Ok]);
        let kept: Vec<usize> = (0..vocab).filter(|&i| scores[i].is_finite()).collect();
        assert_eq!(kept, vec![1, 4, 5]);
        assert!(scores[vocab..].iter().all(|s| *s == 1.0));
        assert_eq!(
            rows.consume(&[0, 1], &[5, 7], true).unwrap(),
            vec![true, false]
        );
        // Two beams from row 0: each its own copy.
        rows.reorder(&[0, 0]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.consume(&[0, 1], &[0, 0], true).unwrap(),
            vec![true, true]
        );
        // min_new_tokens forbade EOS: the complete constraint still gets it.
        let mut rows = ConstraintRows::new(vec![Some(c.matcher())], vec![]);
        rows.consume(&[0], &[5], true).unwrap();
        let mut scores = vec![1.0f32; vocab];
        scores[0] = f32::NEG_INFINITY;
        rows.mask(&mut scores, vocab, &[0]).unwrap();
        assert_eq!(scores[0], 0.0);
        assert!(scores[1..].iter().all(|s| *s == f32::NEG_INFINITY));
    }

    #[test]
    fn forced_tokens_pass_through() {
        let env = env();
        let c = env.compile(&ConstraintSpec::Regex("ab*c".into())).unwrap();
        let vocab = env.vocab_size();
        // "x" (14) stands for a forced language token.
        let mut rows = ConstraintRows::new(vec![Some(c.matcher())], vec![14]);
        let mut scores = vec![f32::NEG_INFINITY; vocab];
        scores[14] = 0.0;
        assert_eq!(
            rows.mask(&mut scores, vocab, &[0]).unwrap(),
            vec![MaskOutcome::Ok]
        );
        assert_eq!(scores[14], 0.0); // not masked
        assert_eq!(rows.consume(&[0], &[14], true).unwrap(), vec![false]);
        // The constraint did not move: "a" still starts it.
        let mut scores = vec![0.0f32; vocab];
        rows.mask(&mut scores, vocab, &[0]).unwrap();
        let kept: Vec<usize> = (0..vocab).filter(|&i| scores[i].is_finite()).collect();
        assert_eq!(kept, vec![1, 4, 5]);
    }

    #[test]
    fn no_token_left_is_reported() {
        let env = env();
        let c = env.compile(&ConstraintSpec::Regex("ab*c".into())).unwrap();
        let vocab = env.vocab_size();
        let mut rows = ConstraintRows::new(vec![Some(c.matcher())], vec![]);
        let mut scores = vec![f32::NEG_INFINITY; vocab];
        scores[2] = 1.0; // only "b", which cannot start the match
        let out = rows.mask(&mut scores, vocab, &[0]).unwrap();
        assert_eq!(out, vec![MaskOutcome::NoTokenLeft]);
        // A forbidden token: an error when strict, a dead row otherwise.
        assert!(rows.consume(&[0], &[2], true).is_err());
        assert_eq!(rows.consume(&[0], &[2], false).unwrap(), vec![false]);
        let mut scores = vec![1.0f32; vocab];
        let out = rows.mask(&mut scores, vocab, &[0]).unwrap();
        assert_eq!(out, vec![MaskOutcome::NoTokenLeft]);
        assert!(scores.iter().all(|s| *s == f32::NEG_INFINITY));
    }
}
