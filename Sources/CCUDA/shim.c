// Pins the layouts of the CUDA structs vtensor passes by pointer. A mismatch with the
// driver's ABI would corrupt memory silently, so it must fail the build instead.
#include "ccuda.h"

_Static_assert(sizeof(CUmemLocation) == 8, "CUmemLocation must be 8 bytes");
_Static_assert(sizeof(CUlaunchAttribute) == 72, "CUlaunchAttribute must be 72 bytes");
_Static_assert(offsetof(CUlaunchAttribute, value) == 8, "CUlaunchAttribute.value offset");
_Static_assert(sizeof(CUlaunchConfig) == 56, "CUlaunchConfig must be 56 bytes");
_Static_assert(offsetof(CUlaunchConfig, hStream) == 32, "CUlaunchConfig.hStream offset");
_Static_assert(offsetof(CUlaunchConfig, numAttrs) == 48, "CUlaunchConfig.numAttrs offset");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc must be 12 bytes");
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp must be 32 bytes");
_Static_assert(offsetof(CUmemAllocationProp, location) == 8, "CUmemAllocationProp.location offset");
_Static_assert(offsetof(CUmemAllocationProp, allocFlags) == 24, "CUmemAllocationProp.allocFlags offset");
_Static_assert(sizeof(CUdeviceptr) == 8, "CUdeviceptr must be 64-bit");
_Static_assert(sizeof(CUmemGenericAllocationHandle) == 8, "allocation handles are 64-bit");
