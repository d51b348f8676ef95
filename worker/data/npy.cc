#include "worker/data/npy.h"

#include <cctype>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gpt2 {
namespace {

uint32_t ReadLittleEndian(std::string_view bytes, size_t offset, int width) {
  uint32_t value = 0;
  for (int i = width - 1; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  }
  return value;
}

// A reader of the Python literal in the header. numpy writes it with repr(), so it holds only
// strings, True/False, integers and tuples of integers; that is all this understands.
class HeaderDictParser {
 public:
  explicit HeaderDictParser(std::string_view text) : text_(text) {}

  absl::StatusOr<NpyHeader> Parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<int64_t>> shape;

    if (!Consume('{')) return Error("expected '{'");
    while (!Consume('}')) {
      std::optional<std::string> key = String();
      if (!key) return Error("expected a quoted key");
      if (!Consume(':')) return Error(absl::StrCat("expected ':' after '", *key, "'"));
      if (*key == "descr") {
        descr = String();
        if (!descr) return Error("'descr' is not a string");
      } else if (*key == "fortran_order") {
        fortran_order = Bool();
        if (!fortran_order) return Error("'fortran_order' is not True or False");
      } else if (*key == "shape") {
        shape = IntTuple();
        if (!shape) return Error("'shape' is not a tuple of integers");
      } else {
        return Error(absl::StrCat("unexpected key '", *key, "'"));
      }
      if (!Consume(',')) {
        if (!Consume('}')) return Error("expected ',' or '}'");
        break;
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the dict");
    if (!descr || !fortran_order || !shape) {
      return absl::InvalidArgumentError("npy header lacks one of the keys 'descr', 'fortran_order', 'shape'");
    }

    if (*descr != "<u2") {
      return absl::InvalidArgumentError(
          absl::StrCat("npy dtype is '", *descr, "'; token shards must be little-endian uint16 ('<u2')"));
    }
    if (*fortran_order) {
      return absl::InvalidArgumentError("npy array is in Fortran order; expected C order");
    }
    if (shape->size() != 1) {
      std::string dims;
      for (int64_t d : *shape) absl::StrAppend(&dims, d, ",");
      return absl::InvalidArgumentError(
          absl::StrCat("npy shape is (", dims, "); token shards must be 1-D, shape (N,)"));
    }
    NpyHeader header;
    header.count = (*shape)[0];
    return header;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed npy header at character ", pos_, ": ", std::string(what), ": ", std::string(text_)));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::optional<std::string> String() {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) return std::nullopt;
    const char quote = text_[pos_];
    const size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) return std::nullopt;
    std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return value;
  }

  std::optional<bool> Bool() {
    SkipSpace();
    const std::string_view rest = text_.substr(pos_);
    if (rest.starts_with("True")) {
      pos_ += 4;
      return true;
    }
    if (rest.starts_with("False")) {
      pos_ += 5;
      return false;
    }
    return std::nullopt;
  }

  std::optional<int64_t> Int() {
    SkipSpace();
    const size_t start = pos_;
    int64_t value = 0;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      const int digit = text_[pos_] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) return std::nullopt;
      value = value * 10 + digit;
      ++pos_;
    }
    if (pos_ == start) return std::nullopt;
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 wrote longs as 123L
    return value;
  }

  // "()", "(N,)", "(N, M)", "(N, M,)"...
  std::optional<std::vector<int64_t>> IntTuple() {
    if (!Consume('(')) return std::nullopt;
    std::vector<int64_t> values;
    while (!Consume(')')) {
      std::optional<int64_t> value = Int();
      if (!value) return std::nullopt;
      values.push_back(*value);
      if (!Consume(',')) {
        if (!Consume(')')) return std::nullopt;
        break;
      }
    }
    return values;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<NpyHeader> ParseNpyHeader(std::string_view file) {
  if (file.size() < 10 || file.substr(0, kNpyMagic.size()) != kNpyMagic) {
    return absl::InvalidArgumentError("not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(file[6]);
  const int minor = static_cast<unsigned char>(file[7]);
  if (minor != 0 || major < 1 || major > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported npy format version ", major, ".", minor, " (expected 1.0, 2.0 or 3.0)"));
  }
  const int length_width = major == 1 ? 2 : 4;
  const size_t prefix = 8 + length_width;
  if (file.size() < prefix) return absl::InvalidArgumentError("npy header is truncated");
  const size_t header_length = ReadLittleEndian(file, 8, length_width);
  if (file.size() - prefix < header_length) {
    return absl::InvalidArgumentError(absl::StrCat("npy header is truncated: it claims ", header_length,
                                                   " bytes, the file has ", file.size() - prefix, " after the prefix"));
  }
  absl::StatusOr<NpyHeader> header = HeaderDictParser(file.substr(prefix, header_length)).Parse();
  if (!header.ok()) return header.status();
  header->data_offset = prefix + header_length;
  return header;
}

std::string FormatNpyHeader(int64_t count) {
  std::string dict = absl::StrCat("{'descr': '<u2', 'fortran_order': False, 'shape': (", count, ",), }");
  // Pad with spaces and end with '\n' so that magic + version + length + dict is exactly the
  // fixed size (a multiple of 64, as numpy itself aligns its headers).
  const size_t prefix = kNpyMagic.size() + 2 + 2;
  dict.resize(kNpyFixedHeaderBytes - prefix - 1, ' ');
  dict.push_back('\n');
  const size_t length = dict.size();
  std::string header(kNpyMagic);
  header.push_back('\x01');  // version 1.0
  header.push_back('\x00');
  header.push_back(static_cast<char>(length & 0xff));
  header.push_back(static_cast<char>(length >> 8));
  return header + dict;
}

}  // namespace gpt2
