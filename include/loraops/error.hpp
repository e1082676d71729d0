// loraops::Error: every invalid input names the op, the argument, what was expected and what came.
#pragma once

#include <stdexcept>
#include <string>

namespace loraops {

enum class ErrorKind {
  Value,        // wrong shape, rank, stride, size, device, unknown kind/impl (Python: ValueError)
  Type,         // wrong dtype, or mixed dtypes (Python: TypeError)
  Unsupported,  // the asked-for implementation does not exist here (Python: loraops.UnsupportedError)
  Runtime,      // the backend failed while running (CUDA error...) (Python: RuntimeError)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string op, std::string argument, std::string expected, std::string got);

  ErrorKind kind() const { return kind_; }
  const std::string& op() const { return op_; }
  const std::string& argument() const { return argument_; }
  const std::string& expected() const { return expected_; }
  const std::string& got() const { return got_; }

 private:
  ErrorKind kind_;
  std::string op_, argument_, expected_, got_;
};

}  // namespace loraops
