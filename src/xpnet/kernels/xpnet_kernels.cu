// xpnet's CUDA kernels: the device-side math behind xpnet.kernels.cuda.CupyOps.
//
// Compiled at run time by CuPy (NVRTC) on first use, and with nvcc in CI as a compile-only
// check.  The activation device functions (xpnet_<name>_fwd / _bwd) are generated from
// ACTIVATION_CUDA in cuda_source.py and prepended to this file.  Each optimizer device function
// takes p, g, its state buffers, then the scalars of its kernel-set operation in the signature's
// order (cuda_source.OPTIMIZER_KERNELS generates the elementwise kernel around it).  C is the compute
// type (float for float16 and float32 storage, double for float64); T is the storage type.

template <typename T> struct xpnet_compute { typedef T type; };

// ---- optimizers: one element of the flat buffers per call; bias corrections come as scalars ----

// Global-norm clipping folded into the update: gradients are scaled by min(max_norm / (norm + 1e-6), 1);
// max_norm <= 0 means no clipping.  sumsq is the device-side sum of squared gradients.
template <typename C> __device__ __forceinline__ C xpnet_grad_scale(C max_norm, C sumsq) {
    if (max_norm <= C(0)) return C(1);
    C coef = max_norm / (sqrt(sumsq) + C(1e-6));
    return coef < C(1) ? coef : C(1);
}

template <typename C>
__device__ __forceinline__ void xpnet_sgd(C& p, C g, C& buf, C lr, C momentum, C dampening, C weight_decay,
                                          int nesterov, int first) {
    if (weight_decay != C(0)) g += weight_decay * p;
    if (momentum != C(0)) {
        buf = first ? g : momentum * buf + (C(1) - dampening) * g;
        g = nesterov ? g + momentum * buf : buf;
    }
    p -= lr * g;
}

template <typename C>
__device__ __forceinline__ void xpnet_adagrad(C& p, C g, C& sum, C clr, C weight_decay, C eps) {
    if (weight_decay != C(0)) g += weight_decay * p;
    sum += g * g;
    p -= clr * (g / (sqrt(sum) + eps));
}

template <typename C>
__device__ __forceinline__ void xpnet_rmsprop(C& p, C g, C& square_avg, C& grad_avg, C& buf, C lr, C alpha, C eps,
                                              C weight_decay, C momentum, int centered) {
    if (weight_decay != C(0)) g += weight_decay * p;
    square_avg = alpha * square_avg + (C(1) - alpha) * g * g;
    C avg;
    if (centered) {
        grad_avg += (C(1) - alpha) * (g - grad_avg);
        avg = sqrt(square_avg - grad_avg * grad_avg) + eps;
    } else {
        avg = sqrt(square_avg) + eps;
    }
    if (momentum != C(0)) {
        buf = momentum * buf + g / avg;
        p -= lr * buf;
    } else {
        p -= lr * (g / avg);
    }
}

// Adam and AdamW (decay = 1 - lr * weight_decay for AdamW, 1 for Adam; l2 = weight_decay for Adam, 0 for AdamW).
template <typename C>
__device__ __forceinline__ void xpnet_adam(C& p, C g, C& m, C& v, C& vmax, C step_size, C beta1, C beta2, C eps,
                                           C l2, C decay, C bc2_sqrt, int amsgrad) {
    p *= decay;
    if (l2 != C(0)) g += l2 * p;
    m += (C(1) - beta1) * (g - m);
    v = beta2 * v + (C(1) - beta2) * g * g;
    C vhat = v;
    if (amsgrad) {
        vmax = vmax > v ? vmax : v;
        vhat = vmax;
    }
    p -= step_size * (m / (sqrt(vhat) / bc2_sqrt + eps));
}

// ---- losses: one warp per row computes the row's loss and its gradient in one pass ----

template <typename C> __device__ __forceinline__ C xpnet_warp_sum(C x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

template <typename C> __device__ __forceinline__ C xpnet_warp_max(C x) {
    for (int o = 16; o > 0; o >>= 1) {
        C other = __shfl_xor_sync(0xffffffffu, x, o);
        if (other > x || other != other) x = other;  // NaN wins, so it propagates
    }
    return x;
}

// Log-sum-exp of one row, shared by the cross-entropy kernels.
template <typename T, typename C> __device__ __forceinline__ C xpnet_row_lse(const T* x, int cols, int lane) {
    C m = (C)x[0];
    for (int j = lane; j < cols; j += 32) {
        C v = (C)x[j];
        if (v > m || v != v) m = v;
    }
    m = xpnet_warp_max<C>(m);
    C s = C(0);
    for (int j = lane; j < cols; j += 32) s += exp((C)x[j] - m);
    return m + log(xpnet_warp_sum<C>(s));
}

// Every loss kernel takes per-row weights: with ``weighted`` != 0 row i's gradient is scaled by
// w[i] * w_inv[0] (w_inv: 1 / the batch's weight total, on the device) and its loss by w[i]; with
// ``weighted`` == 0 (w and w_inv then unread) the scale is 1 / rows (1 / (rows * cols)) as before.
// A label outside [0, cols) must not index the row: the row's loss becomes NaN, its gradient 0,
// and *bad counts it (read on the host when the epoch's values are read).
template <typename T, typename C>
__global__ void xpnet_ce_labels(const T* logits, const long long* labels, T* grad, C* row_loss, int* bad,
                                const C* w, const C* w_inv, int weighted, int rows, int cols) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together
    const T* x = logits + (long long)row * cols;
    T* gr = grad + (long long)row * cols;
    long long label = labels[row];
    if (label < 0 || label >= cols) {
        for (int j = lane; j < cols; j += 32) gr[j] = T(0);
        if (lane == 0) {
            atomicAdd(bad, 1);
            row_loss[row] = sqrt(C(-1));  // NaN
        }
        return;
    }
    int y = (int)label;
    C shift = xpnet_row_lse<T, C>(x, cols, lane);
    C inv = weighted ? w[row] * w_inv[0] : C(1) / C(rows);
    for (int j = lane; j < cols; j += 32) gr[j] = (T)((exp((C)x[j] - shift) - (j == y ? C(1) : C(0))) * inv);
    if (lane == 0) row_loss[row] = weighted ? (shift - (C)x[y]) * w[row] : shift - (C)x[y];
}

template <typename T, typename C>
__global__ void xpnet_ce_dense(const T* logits, const T* targets, T* grad, C* row_loss, int* bad, const C* w,
                               const C* w_inv, int weighted, int rows, int cols) {
    (void)bad;
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* x = logits + (long long)row * cols;
    const T* t = targets + (long long)row * cols;
    T* gr = grad + (long long)row * cols;
    C shift = xpnet_row_lse<T, C>(x, cols, lane);
    C inv = weighted ? w[row] * w_inv[0] : C(1) / C(rows), acc = C(0);
    for (int j = lane; j < cols; j += 32) {
        C log_p = (C)x[j] - shift;
        acc -= (C)t[j] * log_p;
        gr[j] = (T)((exp(log_p) - (C)t[j]) * inv);
    }
    acc = xpnet_warp_sum<C>(acc);
    if (lane == 0) row_loss[row] = weighted ? acc * w[row] : acc;
}

// Losses that are a mean of per-element terms: Term::eval(z, t, &d) returns the term, d its derivative.
struct xpnet_mse_term {
    template <typename C> __device__ __forceinline__ static C eval(C z, C t, C* d) {
        C diff = z - t;
        *d = C(2) * diff;
        return diff * diff;
    }
};

struct xpnet_bce_term {  // with logits; log1p(exp(-|z|)) and the stable sigmoid never overflow
    template <typename C> __device__ __forceinline__ static C eval(C z, C t, C* d) {
        C e = exp(-fabs(z));
        *d = (z >= C(0) ? C(1) / (C(1) + e) : e / (C(1) + e)) - t;
        return (z > C(0) ? z : C(0)) - z * t + log1p(e);
    }
};

template <typename Term, typename T, typename C>
__device__ __forceinline__ void xpnet_elementwise_row_loss(const T* out, const T* targets, T* grad, C* row_loss,
                                                           const C* w, const C* w_inv, int weighted, int rows,
                                                           int cols) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= rows) return;
    long long base = (long long)row * cols;
    C inv = weighted ? w[row] * w_inv[0] : C(1) / (C(rows) * C(cols)), acc = C(0), d;
    for (int j = lane; j < cols; j += 32) {
        acc += Term::template eval<C>((C)out[base + j], (C)targets[base + j], &d);
        grad[base + j] = (T)(d * inv);
    }
    acc = xpnet_warp_sum<C>(acc);
    if (lane == 0) row_loss[row] = weighted ? acc * w[row] : acc;
}

template <typename T, typename C>
__global__ void xpnet_mse(const T* out, const T* targets, T* grad, C* row_loss, int* bad, const C* w, const C* w_inv,
                          int weighted, int rows, int cols) {
    (void)bad;
    xpnet_elementwise_row_loss<xpnet_mse_term, T, C>(out, targets, grad, row_loss, w, w_inv, weighted, rows, cols);
}

template <typename T, typename C>
__global__ void xpnet_bce(const T* logits, const T* targets, T* grad, C* row_loss, int* bad, const C* w,
                          const C* w_inv, int weighted, int rows, int cols) {
    (void)bad;
    xpnet_elementwise_row_loss<xpnet_bce_term, T, C>(logits, targets, grad, row_loss, w, w_inv, weighted, rows, cols);
}
