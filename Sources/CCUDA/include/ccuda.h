// Declarations of the parts of the CUDA driver API, NVRTC and cuBLASLt that vtensor uses.
//
// Nothing here is linked: the GPU module loads the libraries with dlopen at run time and
// resolves each function into a pointer of the matching typedef below, so vtensor builds and
// its CPU tests run on machines with no CUDA at all. Layouts of the structs we pass by pointer
// are pinned with _Static_assert in shim.c; the values are those of CUDA 12/13's cuda.h,
// nvrtc.h and cublasLt.h (the ABI is stable across both).
#ifndef VTENSOR_CCUDA_H
#define VTENSOR_CCUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Driver API types

typedef int CUresult;
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

// CUdevice_attribute values we read.
enum {
    CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1,
    CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13,
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36,
    CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37,
    CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
};

enum { CU_STREAM_DEFAULT = 0, CU_STREAM_NON_BLOCKING = 1 };
enum { CU_EVENT_DEFAULT = 0, CU_EVENT_BLOCKING_SYNC = 1, CU_EVENT_DISABLE_TIMING = 2 };
enum { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8 };

// Virtual memory management.
enum { CU_MEM_ALLOCATION_TYPE_PINNED = 1 };
enum { CU_MEM_HANDLE_TYPE_NONE = 0 };
enum { CU_MEM_LOCATION_TYPE_DEVICE = 1 };
enum { CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1 };
enum { CU_MEM_ACCESS_FLAGS_PROT_NONE = 0, CU_MEM_ACCESS_FLAGS_PROT_READ = 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3 };

typedef struct CUmemLocation_st {
    int type;  // CUmemLocationType
    int id;
} CUmemLocation;

typedef struct CUmemAllocationProp_st {
    int type;                  // CUmemAllocationType
    int requestedHandleTypes;  // CUmemAllocationHandleType
    CUmemLocation location;
    void *win32HandleMetaData;
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
    CUmemLocation location;
    int flags;  // CUmemAccess_flags
} CUmemAccessDesc;

// MARK: - Driver API function pointers (signatures of the CUDA 12.0 ABI, resolved with
// cuGetProcAddress at that version, which CUDA 13 drivers still serve).

typedef CUresult (*PFN_cuGetProcAddress_v2)(const char *symbol, void **pfn, int cudaVersion,
                                            unsigned long long flags, int *symbolStatus);
typedef CUresult (*PFN_cuInit)(unsigned int flags);
typedef CUresult (*PFN_cuDriverGetVersion)(int *version);
typedef CUresult (*PFN_cuGetErrorName)(CUresult error, const char **name);
typedef CUresult (*PFN_cuGetErrorString)(CUresult error, const char **text);
typedef CUresult (*PFN_cuDeviceGetCount)(int *count);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *device, int ordinal);
typedef CUresult (*PFN_cuDeviceGetName)(char *name, int length, CUdevice device);
typedef CUresult (*PFN_cuDeviceTotalMem)(size_t *bytes, CUdevice device);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *value, int attribute, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease)(CUdevice device);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext context);
typedef CUresult (*PFN_cuCtxGetCurrent)(CUcontext *context);
typedef CUresult (*PFN_cuCtxSynchronize)(void);
typedef CUresult (*PFN_cuMemGetInfo)(size_t *free, size_t *total);
typedef CUresult (*PFN_cuMemAlloc)(CUdeviceptr *pointer, size_t bytes);
typedef CUresult (*PFN_cuMemFree)(CUdeviceptr pointer);
typedef CUresult (*PFN_cuMemAllocHost)(void **pointer, size_t bytes);
typedef CUresult (*PFN_cuMemFreeHost)(void *pointer);
typedef CUresult (*PFN_cuMemcpyHtoD)(CUdeviceptr destination, const void *source, size_t bytes);
typedef CUresult (*PFN_cuMemcpyDtoH)(void *destination, CUdeviceptr source, size_t bytes);
typedef CUresult (*PFN_cuMemcpyDtoHAsync)(void *destination, CUdeviceptr source, size_t bytes, CUstream stream);
typedef CUresult (*PFN_cuMemcpyDtoDAsync)(CUdeviceptr destination, CUdeviceptr source, size_t bytes,
                                          CUstream stream);
typedef CUresult (*PFN_cuMemcpyHtoDAsync)(CUdeviceptr destination, const void *source, size_t bytes,
                                          CUstream stream);
typedef CUresult (*PFN_cuMemsetD8Async)(CUdeviceptr destination, unsigned char value, size_t count,
                                        CUstream stream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *stream, unsigned int flags);
typedef CUresult (*PFN_cuStreamDestroy)(CUstream stream);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream stream);
typedef CUresult (*PFN_cuEventCreate)(CUevent *event, unsigned int flags);
typedef CUresult (*PFN_cuEventDestroy)(CUevent event);
typedef CUresult (*PFN_cuEventRecord)(CUevent event, CUstream stream);
typedef CUresult (*PFN_cuEventQuery)(CUevent event);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent event);
typedef CUresult (*PFN_cuEventElapsedTime)(float *milliseconds, CUevent start, CUevent end);
typedef CUresult (*PFN_cuModuleLoadData)(CUmodule *module, const void *image);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule module);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction *function, CUmodule module, const char *name);
typedef CUresult (*PFN_cuFuncSetAttribute)(CUfunction function, int attribute, int value);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction function, unsigned int gridX, unsigned int gridY,
                                       unsigned int gridZ, unsigned int blockX, unsigned int blockY,
                                       unsigned int blockZ, unsigned int sharedMemBytes, CUstream stream,
                                       void **kernelParams, void **extra);
// cuLaunchKernelEx (CUDA 11.8+), used for programmatic dependent launch on Hopper.
enum { CU_LAUNCH_ATTRIBUTE_COOPERATIVE = 2, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct CUlaunchAttribute_st {
    int id;
    char pad[4];
    union {
        char raw[64];
        int programmaticStreamSerializationAllowed;
        int cooperative;
    } value;
} CUlaunchAttribute;
typedef struct CUlaunchConfig_st {
    unsigned int gridDimX, gridDimY, gridDimZ;
    unsigned int blockDimX, blockDimY, blockDimZ;
    unsigned int sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned int numAttrs;
} CUlaunchConfig;
typedef CUresult (*PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *numBlocks, CUfunction function, int blockSize,
                                                                     size_t dynamicSMemSize);
// CUDA graphs (stream capture), CUDA 12 ABI. Capture mode 1 = CU_STREAM_CAPTURE_MODE_THREAD_LOCAL.
typedef CUresult (*PFN_cuStreamBeginCapture)(CUstream stream, int mode);
typedef CUresult (*PFN_cuStreamEndCapture)(CUstream stream, CUgraph *graph);
typedef CUresult (*PFN_cuGraphInstantiateWithFlags)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
typedef CUresult (*PFN_cuGraphLaunch)(CUgraphExec exec, CUstream stream);
typedef CUresult (*PFN_cuGraphExecDestroy)(CUgraphExec exec);
typedef CUresult (*PFN_cuGraphDestroy)(CUgraph graph);
typedef CUresult (*PFN_cuLaunchKernelEx)(const CUlaunchConfig *config, CUfunction function, void **kernelParams, void **extra);
typedef CUresult (*PFN_cuMemAddressReserve)(CUdeviceptr *pointer, size_t size, size_t alignment,
                                            CUdeviceptr address, unsigned long long flags);
typedef CUresult (*PFN_cuMemAddressFree)(CUdeviceptr pointer, size_t size);
typedef CUresult (*PFN_cuMemCreate)(CUmemGenericAllocationHandle *handle, size_t size,
                                    const CUmemAllocationProp *prop, unsigned long long flags);
typedef CUresult (*PFN_cuMemRelease)(CUmemGenericAllocationHandle handle);
typedef CUresult (*PFN_cuMemMap)(CUdeviceptr pointer, size_t size, size_t offset,
                                 CUmemGenericAllocationHandle handle, unsigned long long flags);
typedef CUresult (*PFN_cuMemUnmap)(CUdeviceptr pointer, size_t size);
typedef CUresult (*PFN_cuMemSetAccess)(CUdeviceptr pointer, size_t size, const CUmemAccessDesc *desc,
                                       size_t count);
typedef CUresult (*PFN_cuMemGetAllocationGranularity)(size_t *granularity, const CUmemAllocationProp *prop,
                                                      int option);

// MARK: - NVRTC

typedef int nvrtcResult;
enum { NVRTC_SUCCESS = 0 };
typedef struct _nvrtcProgram *nvrtcProgram;

typedef nvrtcResult (*PFN_nvrtcVersion)(int *major, int *minor);
typedef const char *(*PFN_nvrtcGetErrorString)(nvrtcResult result);
typedef nvrtcResult (*PFN_nvrtcCreateProgram)(nvrtcProgram *program, const char *source, const char *name,
                                              int numHeaders, const char *const *headers,
                                              const char *const *includeNames);
typedef nvrtcResult (*PFN_nvrtcDestroyProgram)(nvrtcProgram *program);
typedef nvrtcResult (*PFN_nvrtcCompileProgram)(nvrtcProgram program, int numOptions, const char *const *options);
typedef nvrtcResult (*PFN_nvrtcGetProgramLogSize)(nvrtcProgram program, size_t *size);
typedef nvrtcResult (*PFN_nvrtcGetProgramLog)(nvrtcProgram program, char *log);
typedef nvrtcResult (*PFN_nvrtcGetCUBINSize)(nvrtcProgram program, size_t *size);
typedef nvrtcResult (*PFN_nvrtcGetCUBIN)(nvrtcProgram program, char *cubin);

// MARK: - cuBLASLt (handle and version now; the matmul entry points arrive with the model runtime)

typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0 };
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque_st *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque_st *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque_st *cublasLtMatmulPreference_t;

typedef cublasStatus_t (*PFN_cublasLtCreate)(cublasLtHandle_t *handle);
typedef cublasStatus_t (*PFN_cublasLtDestroy)(cublasLtHandle_t handle);
typedef size_t (*PFN_cublasLtGetVersion)(void);

// Matmul entry points (for measuring the bf16 matmul ceiling). Enum arguments are plain ints:
// cublasComputeType_t (CUBLAS_COMPUTE_32F = 68), cudaDataType_t (CUDA_R_32F = 0,
// CUDA_R_16F = 2, CUDA_R_16BF = 14), cublasLtMatmulDescAttributes_t (TRANSA = 3, TRANSB = 4),
// cublasOperation_t (N = 0, T = 1). `algo` NULL asks cublasLtMatmul for its own heuristic.
enum {
    CUBLAS_COMPUTE_32F = 68,
    CUDA_R_32F = 0,
    CUDA_R_16F = 2,
    CUDA_R_16BF = 14,
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLAS_OP_N = 0,
    CUBLAS_OP_T = 1,
};
typedef cublasStatus_t (*PFN_cublasLtMatmulDescCreate)(cublasLtMatmulDesc_t *matmulDesc, int computeType, int scaleType);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescDestroy)(cublasLtMatmulDesc_t matmulDesc);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescSetAttribute)(cublasLtMatmulDesc_t matmulDesc, int attr, const void *buf,
                                                            size_t sizeInBytes);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutCreate)(cublasLtMatrixLayout_t *matLayout, int type, uint64_t rows,
                                                        uint64_t cols, int64_t ld);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutDestroy)(cublasLtMatrixLayout_t matLayout);
// Choosing an algorithm (autotuning): the heuristic's candidates for a product, each an opaque
// 64-byte algorithm value passed back to cublasLtMatmul. Preference attribute 1 is the most
// workspace a candidate may use (CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, a uint64).
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
enum { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 };
// Preference attribute 3 (a uint32) masks the split-K reduction schemes a candidate may use:
// INPLACE (1) and OUTPUT_TYPE (4) add partial sums in the output type, COMPUTE_TYPE (2) in fp32;
// an algorithm without split-K (scheme NONE, 0) always passes.
enum { CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3 };
enum { CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2, CUBLASLT_REDUCTION_SCHEME_MASK = 7 };
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceCreate)(cublasLtMatmulPreference_t *pref);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceDestroy)(cublasLtMatmulPreference_t pref);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t pref, int attr, const void *buf,
                                                                  size_t sizeInBytes);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoGetHeuristic)(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                                                            cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                                            cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                                            cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                                                            cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                                            int *returnAlgoCount);
// Reading and changing an algorithm value (the autotune's split-K variants): capability
// attributes (SPLITK_SUPPORT = 0, an int32; REDUCTION_SCHEME_MASK = 1, a uint32), configuration
// attributes (ID = 0, an int32; TILE_ID = 1, SPLITK_NUM = 2, REDUCTION_SCHEME = 3, STAGES_ID = 6,
// uint32s), and a check that a changed value is valid for a product, which fills in the
// workspace it needs and its waves.
enum {
    CUBLASLT_ALGO_CAP_SPLITK_SUPPORT = 0,
    CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK = 1,
    CUBLASLT_ALGO_CONFIG_ID = 0,
    CUBLASLT_ALGO_CONFIG_TILE_ID = 1,
    CUBLASLT_ALGO_CONFIG_SPLITK_NUM = 2,
    CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME = 3,
    CUBLASLT_ALGO_CONFIG_STAGES_ID = 6,
    CUBLASLT_REDUCTION_SCHEME_NONE = 0,
    CUBLASLT_REDUCTION_SCHEME_INPLACE = 1,
    CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE = 4,
};
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoCapGetAttribute)(const cublasLtMatmulAlgo_t *algo, int attr, void *buf,
                                                               size_t sizeInBytes, size_t *sizeWritten);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoConfigGetAttribute)(const cublasLtMatmulAlgo_t *algo, int attr, void *buf,
                                                                  size_t sizeInBytes, size_t *sizeWritten);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoConfigSetAttribute)(cublasLtMatmulAlgo_t *algo, int attr, const void *buf,
                                                                  size_t sizeInBytes);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoCheck)(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                                                     cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                                     cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                                     const cublasLtMatmulAlgo_t *algo, cublasLtMatmulHeuristicResult_t *result);
typedef cublasStatus_t (*PFN_cublasLtMatmul)(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                                            const void *alpha, const void *A, cublasLtMatrixLayout_t Adesc,
                                            const void *B, cublasLtMatrixLayout_t Bdesc, const void *beta,
                                            const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                                            cublasLtMatrixLayout_t Ddesc, const void *algo, void *workspace,
                                            size_t workspaceSizeInBytes, CUstream stream);

#ifdef __cplusplus
}
#endif

#endif  // VTENSOR_CCUDA_H
