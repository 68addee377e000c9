import CCUDA

/// Every CUDA driver function vtensor calls, resolved once into C function pointers.
///
/// Other modules (the VTensor CUDA VMM backend) call these directly through
/// ``CUDADriver/api`` where a wrapper would only add cost; check results with
/// ``CUDADriver/check(_:_:)``. Signatures are those of the CUDA 12.0 ABI (ccuda.h).
///
/// `@unchecked Sendable`: the fields are immutable addresses of C functions, which capture
/// nothing; the driver API itself is thread-safe.
public struct DriverAPI: @unchecked Sendable {
    public let cuInit: PFN_cuInit
    public let cuDriverGetVersion: PFN_cuDriverGetVersion
    public let cuGetErrorName: PFN_cuGetErrorName
    public let cuGetErrorString: PFN_cuGetErrorString
    public let cuDeviceGetCount: PFN_cuDeviceGetCount
    public let cuDeviceGet: PFN_cuDeviceGet
    public let cuDeviceGetName: PFN_cuDeviceGetName
    public let cuDeviceTotalMem: PFN_cuDeviceTotalMem
    public let cuDeviceGetAttribute: PFN_cuDeviceGetAttribute
    public let cuDevicePrimaryCtxRetain: PFN_cuDevicePrimaryCtxRetain
    public let cuDevicePrimaryCtxRelease: PFN_cuDevicePrimaryCtxRelease
    public let cuCtxSetCurrent: PFN_cuCtxSetCurrent
    public let cuCtxGetCurrent: PFN_cuCtxGetCurrent
    public let cuCtxSynchronize: PFN_cuCtxSynchronize
    public let cuMemGetInfo: PFN_cuMemGetInfo
    public let cuMemAlloc: PFN_cuMemAlloc
    public let cuMemFree: PFN_cuMemFree
    /// Page-locked host memory (optional: uploads fall back to pageable memory without it).
    public let cuMemAllocHost: PFN_cuMemAllocHost?
    public let cuMemFreeHost: PFN_cuMemFreeHost?
    public let cuMemcpyHtoD: PFN_cuMemcpyHtoD
    public let cuMemcpyDtoH: PFN_cuMemcpyDtoH
    public let cuMemcpyDtoHAsync: PFN_cuMemcpyDtoHAsync
    public let cuMemcpyDtoDAsync: PFN_cuMemcpyDtoDAsync
    public let cuMemcpyHtoDAsync: PFN_cuMemcpyHtoDAsync
    public let cuMemsetD8Async: PFN_cuMemsetD8Async
    public let cuStreamCreate: PFN_cuStreamCreate
    public let cuStreamDestroy: PFN_cuStreamDestroy
    public let cuStreamSynchronize: PFN_cuStreamSynchronize
    public let cuEventCreate: PFN_cuEventCreate
    public let cuEventDestroy: PFN_cuEventDestroy
    public let cuEventRecord: PFN_cuEventRecord
    public let cuEventQuery: PFN_cuEventQuery
    public let cuEventSynchronize: PFN_cuEventSynchronize
    public let cuEventElapsedTime: PFN_cuEventElapsedTime
    public let cuModuleLoadData: PFN_cuModuleLoadData
    public let cuModuleUnload: PFN_cuModuleUnload
    public let cuModuleGetFunction: PFN_cuModuleGetFunction
    public let cuFuncSetAttribute: PFN_cuFuncSetAttribute
    public let cuLaunchKernel: PFN_cuLaunchKernel
    /// nil on drivers without it (before CUDA 11.8).
    public let cuLaunchKernelEx: PFN_cuLaunchKernelEx?
    public let cuOccupancyMaxActiveBlocksPerMultiprocessor: PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor?
    /// Stream capture into CUDA graphs; nil where the driver lacks any of them.
    public let graphs: GraphAPI?
    public let cuMemAddressReserve: PFN_cuMemAddressReserve
    public let cuMemAddressFree: PFN_cuMemAddressFree
    public let cuMemCreate: PFN_cuMemCreate
    public let cuMemRelease: PFN_cuMemRelease
    public let cuMemMap: PFN_cuMemMap
    public let cuMemUnmap: PFN_cuMemUnmap
    public let cuMemSetAccess: PFN_cuMemSetAccess
    public let cuMemGetAllocationGranularity: PFN_cuMemGetAllocationGranularity

    /// Exported names to `dlsym`, in order, for a driver function when `cuGetProcAddress_v2` is
    /// missing or refuses it. Functions whose ABI changed carry only the versioned name: the
    /// unsuffixed `cuMemAlloc`, say, is the 32-bit legacy entry point and must never be used.
    static let versionedNames: [String: [String]] = [
        "cuDeviceTotalMem": ["cuDeviceTotalMem_v2"],
        "cuDevicePrimaryCtxRelease": ["cuDevicePrimaryCtxRelease_v2"],
        "cuMemGetInfo": ["cuMemGetInfo_v2"],
        "cuMemAlloc": ["cuMemAlloc_v2"],
        "cuMemFree": ["cuMemFree_v2"],
        "cuMemAllocHost": ["cuMemAllocHost_v2"],
        "cuMemcpyHtoD": ["cuMemcpyHtoD_v2"],
        "cuMemcpyDtoH": ["cuMemcpyDtoH_v2"],
        "cuMemcpyDtoHAsync": ["cuMemcpyDtoHAsync_v2"],
        "cuMemcpyDtoDAsync": ["cuMemcpyDtoDAsync_v2"],
        "cuMemcpyHtoDAsync": ["cuMemcpyHtoDAsync_v2"],
        "cuStreamDestroy": ["cuStreamDestroy_v2"],
        "cuEventDestroy": ["cuEventDestroy_v2"],
        // Same signature both ways; drivers before 12.8 export only the unsuffixed one.
        "cuEventElapsedTime": ["cuEventElapsedTime_v2", "cuEventElapsedTime"],
    ]

    /// The `dlsym` fallback names for `symbol` (the unsuffixed name when its ABI never changed).
    static func fallbackNames(for symbol: String) -> [String] {
        versionedNames[symbol] ?? [symbol]
    }

    /// Builds the table; `resolve` gets the unsuffixed name and returns the function's address.
    init(resolve: (String) throws -> UnsafeMutableRawPointer) throws {
        func load<F>(_ symbol: String, _ type: F.Type) throws -> F {
            // resolve returns the address of `symbol` at the CUDA 12.0 ABI; F is its ccuda.h PFN typedef.
            unsafeBitCast(try resolve(symbol), to: F.self)
        }
        cuInit = try load("cuInit", PFN_cuInit.self)
        cuDriverGetVersion = try load("cuDriverGetVersion", PFN_cuDriverGetVersion.self)
        cuGetErrorName = try load("cuGetErrorName", PFN_cuGetErrorName.self)
        cuGetErrorString = try load("cuGetErrorString", PFN_cuGetErrorString.self)
        cuDeviceGetCount = try load("cuDeviceGetCount", PFN_cuDeviceGetCount.self)
        cuDeviceGet = try load("cuDeviceGet", PFN_cuDeviceGet.self)
        cuDeviceGetName = try load("cuDeviceGetName", PFN_cuDeviceGetName.self)
        cuDeviceTotalMem = try load("cuDeviceTotalMem", PFN_cuDeviceTotalMem.self)
        cuDeviceGetAttribute = try load("cuDeviceGetAttribute", PFN_cuDeviceGetAttribute.self)
        cuDevicePrimaryCtxRetain = try load("cuDevicePrimaryCtxRetain", PFN_cuDevicePrimaryCtxRetain.self)
        cuDevicePrimaryCtxRelease = try load("cuDevicePrimaryCtxRelease", PFN_cuDevicePrimaryCtxRelease.self)
        cuCtxSetCurrent = try load("cuCtxSetCurrent", PFN_cuCtxSetCurrent.self)
        cuCtxGetCurrent = try load("cuCtxGetCurrent", PFN_cuCtxGetCurrent.self)
        cuCtxSynchronize = try load("cuCtxSynchronize", PFN_cuCtxSynchronize.self)
        cuMemGetInfo = try load("cuMemGetInfo", PFN_cuMemGetInfo.self)
        cuMemAlloc = try load("cuMemAlloc", PFN_cuMemAlloc.self)
        cuMemFree = try load("cuMemFree", PFN_cuMemFree.self)
        cuMemAllocHost = try? load("cuMemAllocHost", PFN_cuMemAllocHost.self)
        cuMemFreeHost = try? load("cuMemFreeHost", PFN_cuMemFreeHost.self)
        cuMemcpyHtoD = try load("cuMemcpyHtoD", PFN_cuMemcpyHtoD.self)
        cuMemcpyDtoH = try load("cuMemcpyDtoH", PFN_cuMemcpyDtoH.self)
        cuMemcpyDtoHAsync = try load("cuMemcpyDtoHAsync", PFN_cuMemcpyDtoHAsync.self)
        cuMemcpyDtoDAsync = try load("cuMemcpyDtoDAsync", PFN_cuMemcpyDtoDAsync.self)
        cuMemcpyHtoDAsync = try load("cuMemcpyHtoDAsync", PFN_cuMemcpyHtoDAsync.self)
        cuMemsetD8Async = try load("cuMemsetD8Async", PFN_cuMemsetD8Async.self)
        cuStreamCreate = try load("cuStreamCreate", PFN_cuStreamCreate.self)
        cuStreamDestroy = try load("cuStreamDestroy", PFN_cuStreamDestroy.self)
        cuStreamSynchronize = try load("cuStreamSynchronize", PFN_cuStreamSynchronize.self)
        cuEventCreate = try load("cuEventCreate", PFN_cuEventCreate.self)
        cuEventDestroy = try load("cuEventDestroy", PFN_cuEventDestroy.self)
        cuEventRecord = try load("cuEventRecord", PFN_cuEventRecord.self)
        cuEventQuery = try load("cuEventQuery", PFN_cuEventQuery.self)
        cuEventSynchronize = try load("cuEventSynchronize", PFN_cuEventSynchronize.self)
        cuEventElapsedTime = try load("cuEventElapsedTime", PFN_cuEventElapsedTime.self)
        cuModuleLoadData = try load("cuModuleLoadData", PFN_cuModuleLoadData.self)
        cuModuleUnload = try load("cuModuleUnload", PFN_cuModuleUnload.self)
        cuModuleGetFunction = try load("cuModuleGetFunction", PFN_cuModuleGetFunction.self)
        cuFuncSetAttribute = try load("cuFuncSetAttribute", PFN_cuFuncSetAttribute.self)
        cuLaunchKernel = try load("cuLaunchKernel", PFN_cuLaunchKernel.self)
        cuLaunchKernelEx = try? load("cuLaunchKernelEx", PFN_cuLaunchKernelEx.self)
        cuOccupancyMaxActiveBlocksPerMultiprocessor = try? load("cuOccupancyMaxActiveBlocksPerMultiprocessor",
                                                                PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor.self)
        graphs = try? GraphAPI(
            beginCapture: load("cuStreamBeginCapture", PFN_cuStreamBeginCapture.self),
            endCapture: load("cuStreamEndCapture", PFN_cuStreamEndCapture.self),
            instantiate: load("cuGraphInstantiateWithFlags", PFN_cuGraphInstantiateWithFlags.self),
            launch: load("cuGraphLaunch", PFN_cuGraphLaunch.self),
            destroyExec: load("cuGraphExecDestroy", PFN_cuGraphExecDestroy.self),
            destroy: load("cuGraphDestroy", PFN_cuGraphDestroy.self))
        cuMemAddressReserve = try load("cuMemAddressReserve", PFN_cuMemAddressReserve.self)
        cuMemAddressFree = try load("cuMemAddressFree", PFN_cuMemAddressFree.self)
        cuMemCreate = try load("cuMemCreate", PFN_cuMemCreate.self)
        cuMemRelease = try load("cuMemRelease", PFN_cuMemRelease.self)
        cuMemMap = try load("cuMemMap", PFN_cuMemMap.self)
        cuMemUnmap = try load("cuMemUnmap", PFN_cuMemUnmap.self)
        cuMemSetAccess = try load("cuMemSetAccess", PFN_cuMemSetAccess.self)
        cuMemGetAllocationGranularity = try load("cuMemGetAllocationGranularity", PFN_cuMemGetAllocationGranularity.self)
    }
}

/// The driver's stream-capture and graph entry points (all present, or the table is nil).
public struct GraphAPI: @unchecked Sendable {
    public let beginCapture: PFN_cuStreamBeginCapture
    public let endCapture: PFN_cuStreamEndCapture
    public let instantiate: PFN_cuGraphInstantiateWithFlags
    public let launch: PFN_cuGraphLaunch
    public let destroyExec: PFN_cuGraphExecDestroy
    public let destroy: PFN_cuGraphDestroy
}
