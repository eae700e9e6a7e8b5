#pragma once
/// GLM families: per-sample loss and its first two derivatives in the linear predictor z.

#include "rif/types.hpp"

#include <cmath>
#include <string>

namespace rif {

enum class Family { logistic, squared, poisson };

/// Parses "logistic", "squared" or "poisson"; throws std::invalid_argument otherwise.
Family parse_family(const std::string& name);
const char* family_name(Family family);

/// Checks labels (finite; logistic: 0 or 1; poisson: >= 0) and weights (finite, >= 0; may be
/// empty). Throws std::invalid_argument naming the first offending sample.
void validate_labels(Family family, const Vector& y);
void validate_weights(const Vector& w, Index n);

/// Logistic sigma(z) without overflow for large |z|.
inline double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

/// sigma(z) and sigma(-z) = 1 - sigma(z) from one exp, each to full relative precision: the
/// difference 1 - sigma(z) cancels for large z (all of it from z = 37, a 1e-3 error at z = 30).
inline void sigmoid_pair(double z, double* s, double* t) {
  const double e = std::exp(-std::abs(z));
  const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
  *s = z >= 0 ? big : small;  // (the bits of sigmoid(z))
  *t = z >= 0 ? small : big;
}

/// Unweighted logistic dloss/dz = sigma(z) - y for y in {0, 1}: -sigma(-z) when y = 1, which
/// keeps its relative precision where sigma(z) nears 1.
inline double logistic_residual(double y, double z) {
  return y == 1.0 ? -sigmoid(-z) : sigmoid(z) - y;
}

/// log(1 + e^z) without overflow.
inline double softplus(double z) {
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}

/// Unweighted dloss/dz at (y, z).
inline double first_derivative(Family family, double y, double z) {
  switch (family) {
    case Family::logistic: return logistic_residual(y, z);
    case Family::squared: return z - y;
    case Family::poisson: return std::exp(z) - y;
  }
  return 0;
}

/// Unweighted loss(y, z).
inline double loss(Family family, double y, double z) {
  switch (family) {
    case Family::logistic: return softplus(z) - y * z;
    case Family::squared: return 0.5 * (z - y) * (z - y);
    case Family::poisson: return std::exp(z) - y * z;
  }
  return 0;
}

/// r_i = w_i dloss/dz and a_i = w_i d2loss/dz2 at z (w empty means all ones).
void derivatives(Family family, const Vector& z, const Vector& y, const Vector& w, Vector& r,
                 Vector& a);
/// The same for samples [begin, begin + count) only, into r and a already of length n.
void derivatives_range(Family family, const Vector& z, const Vector& y, const Vector& w,
                       Vector& r, Vector& a, Index begin, Index count);

/// sum_i w_i loss(y_i, z_i); +inf when it overflows.
double total_loss(Family family, const Vector& z, const Vector& y, const Vector& w);

}  // namespace rif
