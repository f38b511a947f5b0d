// qdot_impl.h for the baseline ISA: every CPU runs it.
#define QWEN_QDOT_NS generic
#define QWEN_QDOT_ISA "generic"
#include "backend/cpu/qdot_impl.h"
