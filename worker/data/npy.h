// The header of NumPy's .npy format, for the one kind of array our shards use: a 1-D, C-order
// array of little-endian uint16 (dtype '<u2'), as build-nanogpt's fineweb.py writes with np.save.
//
// A .npy file is: the magic "\x93NUMPY", a major and a minor version byte, the header length
// (uint16 little-endian for version 1.0, uint32 for 2.0 and 3.0), then the header itself: a Python
// dict literal such as {'descr': '<u2', 'fortran_order': False, 'shape': (1000,), } padded with
// spaces and ended by '\n'. The array's raw bytes follow the header.
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html)

#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gpt2 {

// The six bytes every .npy file starts with.
inline constexpr std::string_view kNpyMagic = "\x93NUMPY";

// What the header of a uint16 vector says.
struct NpyHeader {
  int64_t count = 0;       // the shape's single dimension
  size_t data_offset = 0;  // where the array's bytes start in the file
};

// Parses the header at the start of `file` (the file's first bytes; the whole file is fine).
// Accepts versions 1.0, 2.0 and 3.0 with exactly the keys 'descr', 'fortran_order' and 'shape'.
// Errors (InvalidArgument, saying what is wrong, without the file's name): not .npy, an unknown
// version, a header running past `file`, a malformed dict, a dtype other than '<u2', Fortran
// order, or a shape that is not (N,). Does not compare the count with the file's size.
absl::StatusOr<NpyHeader> ParseNpyHeader(std::string_view file);

// The complete header (magic to '\n') for a uint16 vector of `count` elements, in format 1.0.
// Always kNpyFixedHeaderBytes long whatever the count, so that a writer can reserve the space
// before it knows the count and fill it in afterwards.
std::string FormatNpyHeader(int64_t count);
inline constexpr size_t kNpyFixedHeaderBytes = 128;

}  // namespace gpt2
