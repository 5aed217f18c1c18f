// vgrad: the one header a program includes.
#pragma once
#include "autograd/engine.h"
#include "autograd/function.h"
#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "core/tensor.h"
