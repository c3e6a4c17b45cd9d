// The T5 tokenizer as Wan2.1's pipeline calls it, over a sentencepiece model (spiece.model).
//
// Built only where the sentencepiece library was found: check DITKIT_HAVE_SENTENCEPIECE (in the
// generated "ditkit_config.h") before using anything declared here. The GPU machine has no
// sentencepiece; it takes token ids made elsewhere.
//
// What it does, as diffusers' WanPipeline._get_t5_prompt_embeds with transformers' T5Tokenizer:
// clean the prompt (clean_prompt), split it into sentencepiece ids, keep at most max_length - 1 of
// them, append EOS, pad with the pad id to max_length; the mask is 1 on the ids and EOS, 0 on the
// padding. An empty or whitespace-only prompt becomes just [EOS] (length 1), as there.
//
// Where it differs from transformers' tokenizer, for prompts people do not write: literal special
// token strings in a prompt ("</s>", "<pad>", "<extra_id_0>") are text here, single tokens there.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace ditkit {

struct TokenBatch {
  at::Tensor input_ids;       // int64 [B, max_length]
  at::Tensor attention_mask;  // int64 [B, max_length]: 1 on tokens (EOS included), 0 on padding
  std::vector<int64_t> lengths;  // tokens per prompt, EOS included: 1..max_length
};

// diffusers' prompt_clean for Wan: HTML entities unescaped twice, then runs of Unicode whitespace
// (Python regex \s) become one space and the ends are stripped. ftfy.fix_text, which diffusers
// applies first only where ftfy is installed, is not done. Entities: numeric ones (&#65; &#x41;,
// with html.unescape's rules for invalid code points) and &amp; &lt; &gt; &quot; &apos; &nbsp;
// (all but &apos; also without the semicolon, as html.unescape takes HTML's legacy forms); other
// named entities (&eacute;) stay as written. Throws std::invalid_argument on text that is not
// valid UTF-8.
std::string clean_prompt(const std::string& text);

class Tokenizer {
 public:
  // path: a spiece.model file, or a folder (Wan's tokenizer/) holding one. Throws
  // std::runtime_error naming the file when it is missing or not a sentencepiece model, or when
  // the model has no pad or EOS piece (T5 models have pad 0, EOS 1).
  explicit Tokenizer(const std::string& path);

  // The Wan pipeline's tokenization of each prompt (see the top of this file); max_length >= 1
  // (Wan: 512). Throws std::invalid_argument naming the prompt on invalid UTF-8.
  TokenBatch encode(const std::vector<std::string>& prompts, int64_t max_length = 512) const;

  // One text, not cleaned: its sentencepiece ids truncated to max_length - 1, then EOS; no padding.
  std::vector<int64_t> tokenize(const std::string& text, int64_t max_length = 512) const;

  // The number of sentencepiece pieces. transformers' T5Tokenizer adds sentinel tokens after
  // them (<extra_id_N>), so the encoder's vocab_size is larger; ids from here are all below this.
  int64_t piece_count() const;
  int64_t pad_id() const { return pad_id_; }
  int64_t eos_id() const { return eos_id_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor_;  // immutable once loaded
  int64_t pad_id_ = 0, eos_id_ = 1;
};

}  // namespace ditkit
