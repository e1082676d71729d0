#include "loraops/error.hpp"

#include <utility>

namespace loraops {

namespace {
std::string format(const std::string& op, const std::string& arg, const std::string& expected,
                   const std::string& got) {
  return op + ": argument '" + arg + "': expected " + expected + ", got " + got;
}
}  // namespace

Error::Error(ErrorKind kind, std::string op, std::string argument, std::string expected,
             std::string got)
    : std::runtime_error(format(op, argument, expected, got)),
      kind_(kind),
      op_(std::move(op)),
      argument_(std::move(argument)),
      expected_(std::move(expected)),
      got_(std::move(got)) {}

}  // namespace loraops
