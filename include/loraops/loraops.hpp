// loraops: the operations LoRA fine-tuning and serving spend their time in, each with a vendor
// and a custom implementation. One include for the whole public API.
#pragma once

#include "loraops/dtype.hpp"
#include "loraops/error.hpp"
#include "loraops/ops.hpp"
#include "loraops/tensor.hpp"
