#include "rif/glm.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace rif {

Family parse_family(const std::string& name) {
  if (name == "logistic") return Family::logistic;
  if (name == "squared") return Family::squared;
  if (name == "poisson") return Family::poisson;
  throw std::invalid_argument("family must be 'logistic', 'squared' or 'poisson', got '" + name +
                              "'");
}

const char* family_name(Family family) {
  switch (family) {
    case Family::logistic: return "logistic";
    case Family::squared: return "squared";
    case Family::poisson: return "poisson";
  }
  return "?";
}

void validate_labels(Family family, const Vector& y) {
  for (Index i = 0; i < y.size(); ++i) {
    const double v = y[i];
    std::ostringstream msg;
    if (!std::isfinite(v)) {
      msg << "y contains NaN or inf (first at sample " << i << ")";
      throw std::invalid_argument(msg.str());
    }
    if (family == Family::logistic && v != 0.0 && v != 1.0) {
      msg << "logistic labels y must be 0 or 1, got " << v << " at sample " << i
          << " (map your classes to 0/1, e.g. y = (labels == positive_class))";
      throw std::invalid_argument(msg.str());
    }
    if (family == Family::poisson && v < 0.0) {
      msg << "poisson labels y must be >= 0, got " << v << " at sample " << i;
      throw std::invalid_argument(msg.str());
    }
  }
}

void validate_weights(const Vector& w, Index n) {
  if (w.size() == 0) return;
  if (w.size() != n) {
    std::ostringstream msg;
    msg << "sample_weight must have one entry per sample (" << n << "), got " << w.size();
    throw std::invalid_argument(msg.str());
  }
  for (Index i = 0; i < n; ++i) {
    std::ostringstream msg;
    if (!std::isfinite(w[i])) {
      msg << "sample_weight contains NaN or inf (first at sample " << i << ")";
      throw std::invalid_argument(msg.str());
    }
    if (w[i] < 0) {
      msg << "sample_weight must be >= 0, got " << w[i] << " at sample " << i;
      throw std::invalid_argument(msg.str());
    }
  }
}


void derivatives(Family family, const Vector& z, const Vector& y, const Vector& w, Vector& r,
                 Vector& a) {
  r.resize(z.size());
  a.resize(z.size());
  derivatives_range(family, z, y, w, r, a, 0, z.size());
}

void derivatives_range(Family family, const Vector& z, const Vector& y, const Vector& w,
                       Vector& r, Vector& a, Index begin, Index count) {
  for (Index i = begin; i < begin + count; ++i) {
    const double wi = w.size() ? w[i] : 1.0;
    if (wi == 0) {  // a removed sample: no contribution, even where exp(z) overflows
      r[i] = a[i] = 0.0;
      continue;
    }
    switch (family) {
      case Family::logistic: {
        double s, t;  // sigma(z), 1 - sigma(z)
        sigmoid_pair(z[i], &s, &t);
        r[i] = wi * (y[i] == 1.0 ? -t : s - y[i]);
        a[i] = wi * s * t;
        break;
      }
      case Family::squared:
        r[i] = wi * (z[i] - y[i]);
        a[i] = wi;
        break;
      case Family::poisson: {
        const double mu = std::exp(z[i]);
        r[i] = wi * (mu - y[i]);
        a[i] = wi * mu;
        break;
      }
    }
  }
}

double total_loss(Family family, const Vector& z, const Vector& y, const Vector& w) {
  double total = 0;
  for (Index i = 0; i < z.size(); ++i) {
    const double wi = w.size() ? w[i] : 1.0;
    if (wi != 0) total += wi * loss(family, y[i], z[i]);
  }
  return std::isfinite(total) ? total : INFINITY;
}

}  // namespace rif
