#ifndef BATCHFETCH_SERVICE_API_GRPC_STATUS_H_
#define BATCHFETCH_SERVICE_API_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace batchfetch {

// absl and gRPC share their status codes.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_GRPC_STATUS_H_
