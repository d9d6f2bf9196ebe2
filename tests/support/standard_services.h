// Calls to the standard gRPC services the server offers besides
// BatchFetcher (what grpcurl relies on: health checking and server
// reflection), spoken as raw protobuf bytes so tests need no extra protos.
// Header-only: include it only from tests that link gRPC (the e2e tests).
#ifndef BATCHFETCH_TESTS_SUPPORT_STANDARD_SERVICES_H_
#define BATCHFETCH_TESTS_SUPPORT_STANDARD_SERVICES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace batchfetch::testing {

// The bytes of `buffer`, or "" when they cannot be read.
inline std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return "";
  std::string out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

inline grpc::ByteBuffer FromBytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// grpc.health.v1.Health/Check with HealthCheckRequest{} (the whole server)
// over `channel`, within 10 s. Returns the call's status; `*response` gets
// the response's bytes ("\x08\x01" is {status: SERVING}).
inline grpc::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                std::string* response) {
  grpc::GenericStub generic(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::ByteBuffer buffer;
  grpc::Status status;
  auto call = generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                                       FromBytes(""), &cq);
  call->StartCall();
  call->Finish(&buffer, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  cq.Next(&tag, &ok);
  *response = ToBytes(buffer);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo over
// `channel`, within 10 s: one ServerReflectionRequest{list_services: ""},
// then the end of the requests. Returns the status the call ended with;
// `*response` gets the bytes of the first answer (the service list), ""
// when none came.
inline grpc::Status ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, std::string* response) {
  response->clear();
  grpc::GenericStub generic(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  auto call = generic.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  // Each operation completes with one event on `cq`; after one fails the
  // stream is broken, so the rest are skipped and only Finish is asked.
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  if (ok) {
    call->Write(FromBytes(std::string("\x3a\x00", 2)),
                reinterpret_cast<void*>(2));
    cq.Next(&tag, &ok);
  }
  if (ok) {
    grpc::ByteBuffer buffer;
    call->Read(&buffer, reinterpret_cast<void*>(3));
    cq.Next(&tag, &ok);
    if (ok) *response = ToBytes(buffer);
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Expects (as test failures) the server behind `channel` to report SERVING
// to a health check and to list batchfetch.v1.BatchFetcher through
// reflection.
inline void ExpectHealthAndReflectionServed(
    const std::shared_ptr<grpc::Channel>& channel) {
  std::string health;
  grpc::Status status = CheckHealth(channel, &health);
  EXPECT_TRUE(status.ok()) << "health: " << status.error_message();
  EXPECT_EQ(health, std::string("\x08\x01", 2));  // {status: SERVING}
  std::string services;
  status = ListServicesByReflection(channel, &services);
  EXPECT_TRUE(status.ok()) << "reflection: " << status.error_message();
  EXPECT_NE(services.find("batchfetch.v1.BatchFetcher"), std::string::npos)
      << "reflection answered: " << services;
}

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_STANDARD_SERVICES_H_
