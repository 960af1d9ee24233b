/* aihwkit's IO-managed analog MVM (AnalogMVM.matmul, one pass of bound management), fused.
 *
 * Each output row is one input vector: a conv patch gathered straight from an NHWC input (a
 * linear layer is a 1x1 conv on a 1x1 image). For a panel of rows the kernel gathers the
 * patches, takes each row's noise-management scale (abs-max / max / none) on the way,
 * quantises the rows to DAC levels, multiplies them by the tile weights (already scaled to
 * ADC-level units), adds Gaussian output noise, rounds to ADC levels, checks and applies the
 * output bound, rescales and adds the bias (and, where the layer's eval-mode BatchNorm is
 * absorbed, applies its per-channel affine as torch's BN kernel does): all in cache. The
 * unfolded, quantised input is never written to memory, which is what makes the IO-managed
 * conv cost about two digital convs instead of ten.
 *
 * Output noise: a counter-based generator (Philox4x32-10, keyed by a 64-bit seed that the
 * caller draws per launch) through Box-Muller. Normal number f of a launch is output
 * f = row * npad + column; it depends on the seed and f only, so the numbers are the same
 * whatever the thread count or the schedule.
 *
 * Plain C with GCC vector extensions: 16 floats to a vector where the machine has AVX-512
 * (-DHWSIM_VEC8 forces 8), 8 elsewhere; x86 builtins where they exist (AVX-512, AVX, AVX2),
 * portable element-wise code otherwise. Every output is computed lane by lane in the same
 * order whatever the vector width (the product accumulates over the rows in order; the
 * normals are the same numbers of the same stream), so both widths give the same bits.
 * hwsim.engine.kernels builds it with the system compiler (-O3 -march=native -fopenmp) and
 * calls it through ctypes.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && !defined(HWSIM_VEC8)
#include <immintrin.h>
#define VEC 16 /* floats per vector */
#define WIDE 2 /* column blocks per micro-tile where the columns allow */
#ifndef ROWS
#define ROWS 12 /* rows per micro-tile: ROWS x WIDE x COLS accumulators in registers */
#endif
#else
#define VEC 8
#define WIDE 1
#ifndef ROWS
#define ROWS 6
#endif
#endif
#define COLS 16        /* the column block (weights are padded to a multiple of it) */
#define CV (COLS / VEC) /* vectors per column block */
#ifndef PANEL
#define PANEL 48 /* rows gathered at a time (a multiple of ROWS and of 2) */
#endif

typedef float vf __attribute__((vector_size(VEC * 4)));
typedef int32_t vi __attribute__((vector_size(VEC * 4)));
typedef uint32_t vu __attribute__((vector_size(VEC * 4)));
typedef uint64_t vu64 __attribute__((vector_size(VEC * 4)));
typedef uint32_t u32a __attribute__((may_alias));

typedef struct {
    /* input: NHWC (n, h, w, c) float32; this tile reads channels c0:c1 */
    const float *x;
    int64_t n, h, w, c, c0, c1;
    int64_t kh, kw, sh, sw, ph, pw, ho, wo;
    /* weights: (k, npad) float32, k = kh * kw * (c1 - c0) in (ky, kx, c) order,
       npad % COLS == 0, in ADC levels per DAC level; columns >= nout are zero */
    const float *wt;
    int64_t k, npad, nout;
    /* output: row r at y + r * y_stride, nout columns */
    float *y;
    int64_t y_stride;
    const float *col_scale; /* (npad,): ADC step times the tile's digital scale */
    const float *bias;      /* (npad,): the digital bias, or zeros */
    /* forward IO */
    int32_t nm;           /* noise management: 0 none, 1 abs_max, 2 max */
    int32_t clamp_input;  /* clamp the input to +-inp_lim DAC levels */
    int32_t inp_round;    /* round inputs to whole DAC levels */
    int32_t out_round;    /* round outputs to whole ADC levels */
    int32_t stop_on_clip; /* bound management: a clipped pass is redone, so stop it early */
    int32_t tie_fix;      /* a row's (abs-)max lands on a half level: round it as aihwkit */
    float reduction;      /* bound-management reduction of this pass */
    float red_step;       /* reduction times the DAC step (1 when not quantised), in float */
    float inp_step;       /* the DAC step */
    float inp_lim;        /* input bound in DAC levels */
    float out_noise;      /* output noise std in ADC levels */
    float out_step;       /* the ADC step (1 when not quantised) */
    float out_bound;      /* the output bound (inf: none) */
    float out_lim;        /* the output bound in ADC levels */
    uint64_t seed;
    const float *noise_in; /* (rows, nout) normals to use instead of drawing them, or NULL */
    /* an absorbed eval-mode BatchNorm: y = fma(y, post_scale, post_shift) per column after
       the bias (torch's BN on the output, same bits); NULL: none */
    const float *post_scale, *post_shift; /* (npad,) */
} mvm_args;

/* ---- vector helpers -------------------------------------------------------------------- */

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf vsplat(float f) { return (vf){0} + f; }

static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

static inline vf vrint(vf x) { /* round half to even, as torch.round */
#if VEC == 16
    return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX__)
    return __builtin_ia32_roundps256(x, 4);
#else
    for (int i = 0; i < VEC; i++)
        x[i] = __builtin_rintf(x[i]);
    return x;
#endif
}

static inline vf vsqrt(vf x) {
#if VEC == 16
    return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
    return __builtin_ia32_sqrtps256(x);
#else
    for (int i = 0; i < VEC; i++)
        x[i] = __builtin_sqrtf(x[i]);
    return x;
#endif
}

/* a * b + c rounded once, lane by lane (what torch's vectorised BN computes) */
static inline vf vfma(vf a, vf b, vf c) {
#if VEC == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
    return __builtin_ia32_vfmaddps256(a, b, c);
#else
    for (int i = 0; i < VEC; i++)
        a[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return a;
#endif
}

static inline vf vclamp(vf x, float lim) {
    x = vselect(x > lim, vsplat(lim), x);
    return vselect(x < -lim, vsplat(-lim), x);
}

/* keep a value in a register: stops the compiler re-reading it from memory at every use */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__AVX__) /* (a vector register
                                                                      holds a whole vf) */
#define IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define IN_REGISTER(v) (void)0
#endif

/* ---- counter-based Gaussian noise ------------------------------------------------------ */

/* high and low 32 bits of a * m, lane by lane */
static inline void mulhilo(vu a, uint32_t m, vu *hi, vu *lo) {
    *lo = a * m;
#if VEC == 16
    vu mm = (vu){0} + m;
    vu64 even = (vu64)_mm512_mul_epu32((__m512i)a, (__m512i)mm);
    vu64 odd = (vu64)_mm512_mul_epu32((__m512i)((vu64)a >> 32), (__m512i)mm);
#elif defined(__AVX2__)
    vu mm = {m, m, m, m, m, m, m, m};
    vu64 even = (vu64)__builtin_ia32_pmuludq256((vi)a, (vi)mm);
    vu64 odd = (vu64)__builtin_ia32_pmuludq256((vi)((vu64)a >> 32), (vi)mm);
#else
    vu64 even = ((vu64)a & 0xFFFFFFFFu) * m;
    vu64 odd = ((vu64)a >> 32) * m;
#endif
    *hi = (vu)((even >> 32) | (odd & 0xFFFFFFFF00000000u));
}

/* Philox4x32-10 (Salmon et al., SC 2011) on VEC counters at once */
static inline void philox(vu c[4], uint32_t k0, uint32_t k1) {
    for (int i = 0; i < 10; i++) {
        vu h0, l0, h1, l1;
        mulhilo(c[0], 0xD2511F53u, &h0, &l0);
        mulhilo(c[2], 0xCD9E8D57u, &h1, &l1);
        c[0] = h1 ^ c[1] ^ k0;
        c[2] = h0 ^ c[3] ^ k1;
        c[1] = l1;
        c[3] = l0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* natural log of u in (0, 1] (Cephes' logf polynomial, ~1 ulp) */
static inline vf log_unit(vf u) {
    vu b = (vu)u;
    vi e = (vi)(b >> 23) - 126;                          /* u = m * 2^e, m in [0.5, 1) */
    vf m = (vf)((b & 0x007FFFFFu) | 0x3F000000u);
    vi lo = m < 0.70710678f;                             /* -1 where m < sqrt(1/2) */
    e += lo;
    m = (vf)((vu)m - ((vu)lo << 23));                    /* doubled there: m in [.71, 1.41) */
    vf f = m - 1.0f, z = f * f;
    vf p = f * 7.0376836292e-2f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    vf ef = __builtin_convertvector(e, vf);
    return f + (p * f * z - 0.5f * z) + ef * 0.693359375f - ef * 2.12194440e-4f;
}

/* two standard normals from two words of random bits (Box-Muller) */
static inline void box_muller(vu a, vu b, vf *z0, vf *z1) {
    vf u = __builtin_convertvector((vi)((a >> 8) + 1u), vf) * 5.9604644775390625e-8f; /* (0,1] */
    vf t = __builtin_convertvector((vi)(b >> 8), vf) * 2.384185791015625e-7f; /* [0, 4) */
    vf rho = vsqrt(-2.0f * log_unit(u));
    vf q = vrint(t);                                     /* angle = (q + f) quarter turns */
    vf f = (t - q) * 1.5707963267948966f, f2 = f * f;   /* f in [-pi/4, pi/4] */
    vf s = f + f * f2 * (-1.6666654611e-1f + f2 * (8.3321608736e-3f - f2 * 1.9515295891e-4f));
    vf c = 1.0f - 0.5f * f2
           + f2 * f2 * (4.166664568298827e-2f
                        + f2 * (-1.388731625493765e-3f + f2 * 2.443315711809948e-5f));
    /* quarter turn q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) for q = 0, 1, 2, 3 */
    vu quad = (vu)__builtin_convertvector(q, vi);
    vi odd = (vi)(0u - (quad & 1u));
    vf cs = vselect(odd, s, c), sn = vselect(odd, c, s);
    *z0 = rho * (vf)((vu)cs ^ ((((quad + 1u) >> 1) & 1u) << 31));
    *z1 = rho * (vf)((vu)sn ^ (((quad >> 1) & 1u) << 31));
}

/* normals first .. first + n - 1 of the seed's stream (first and n multiples of 32): one
   Philox call on counter 8 * g + l (l < 8) gives normals 32 * g + 8 * j + l, j = 0..3. With
   16 lanes a call takes the counters of groups g and g + 1, and each half of a result
   vector goes to its own group: the same numbers as 8 lanes. */
static void normals(float *restrict out, int64_t first, int64_t n, uint64_t seed) {
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    vu lane;
    for (int l = 0; l < VEC; l++)
        lane[l] = (uint32_t)l;
    const int64_t g_end = (first + n) / 32;
    for (int64_t g = first / 32; g < g_end; g += VEC / 8) {
        uint64_t ctr = (uint64_t)g * 8;
        vu high = (vu){0}; /* the counter's high word (it steps within a call whose low
                              words wrap) */
        for (int l = 0; l < VEC; l++)
            high[l] = (uint32_t)((ctr + l) >> 32);
        vu c[4] = {lane + (uint32_t)ctr, high, (vu){0}, (vu){0}};
        philox(c, k0, k1);
        vf z[4];
        box_muller(c[0], c[1], &z[0], &z[1]);
        box_muller(c[2], c[3], &z[2], &z[3]);
        for (int h = 0; h < VEC / 8 && g + h < g_end; h++) {
            float *o = out + ((g + h) * 32 - first);
            for (int j = 0; j < 4; j++)
                memcpy(o + 8 * j, (const float *)&z[j] + 8 * h, 8 * sizeof(float));
        }
    }
}

/* ---- input rows ------------------------------------------------------------------------ */

/* where a row's patch lies in the input */
typedef struct {
    int64_t img, oy, ox;
} pos_t;

static inline pos_t row_pos(const mvm_args *restrict a, int64_t row) {
    return (pos_t){row / (a->ho * a->wo), (row / a->wo) % a->ho, row % a->wo};
}

static inline void next_pos(const mvm_args *restrict a, pos_t *p) {
    if (++p->ox == a->wo) {
        p->ox = 0;
        if (++p->oy == a->ho) {
            p->oy = 0;
            p->img++;
        }
    }
}

/* Noise management: the row's (abs-)max, zero padding included, as an order-preserving
   integer key (|v|'s bits for abs_max; for max, v's bits mapped to integers that order as
   the floats do), so that the max is an integer max. */
static inline int32_t float_key(int32_t b, int32_t nm) {
    return nm == 1 ? b & 0x7FFFFFFF : b ^ ((b >> 31) & 0x7FFFFFFF);
}

static inline vi vmax_i(vi a, vi b) {
#if VEC == 16
    return (vi)_mm512_max_epi32((__m512i)a, (__m512i)b);
#elif defined(__AVX2__)
    return (vi)__builtin_ia32_pmaxsd256(a, b);
#else
    return (vi)vselect(a > b, (vf)a, (vf)b);
#endif
}

/* the largest key among n floats */
static int32_t max_key(const float *restrict v, int64_t n, int32_t nm) {
    vi m = (vi){0} + INT32_MIN;
    int64_t i = 0;
    for (; i + VEC <= n; i += VEC) {
        vi b = (vi)vload(v + i);
        m = vmax_i(m, nm == 1 ? b & 0x7FFFFFFF : b ^ ((b >> 31) & 0x7FFFFFFF));
    }
#if VEC == 16
    int32_t best = _mm512_reduce_max_epi32((__m512i)m);
#else
    int32_t best = INT32_MIN;
    for (int j = 0; j < VEC; j++)
        best = m[j] > best ? m[j] : best;
#endif
    for (; i < n; i++) {
        int32_t b;
        memcpy(&b, v + i, 4);
        b = float_key(b, nm);
        best = b > best ? b : best;
    }
    return best;
}

/* A thread's cache of input rows reduced for noise management: for an input row, the key of
   each output column's kw-pixel window in it (the max over the window's pixels of their
   channels' keys; a window reaching into the padding includes its zeros' key, 0). Rows are
   visited in order, so each input row is reduced about once instead of kh x kw times. */
typedef struct {
    int64_t slots, clock, img, oy; /* img, oy: the output row that `rows` belongs to */
    int64_t *tag, *age;            /* which input row (img * h + iy) each slot holds, and when
                                      it was last used */
    int32_t *keys;                 /* slots x wo window keys */
    int32_t *pixel;                /* w pixel keys (scratch) */
    const int32_t **rows;          /* kh: the current output row's input rows (padding rows:
                                      `zeros`) */
    int32_t *zeros;                /* wo keys of a row of padding: 0, the key of 0.0f */
    float *scale, *gain;           /* wo: the current output row's noise-management scales
                                      and DAC gains */
} key_cache;

static void cache_init(const mvm_args *restrict a, key_cache *kc) {
    kc->slots = a->kh + a->sh;
    kc->clock = 0;
    kc->img = kc->oy = -1;
    kc->tag = malloc(kc->slots * sizeof(int64_t));
    kc->age = malloc(kc->slots * sizeof(int64_t));
    kc->keys = malloc(kc->slots * a->wo * sizeof(int32_t));
    kc->pixel = malloc(a->w * sizeof(int32_t));
    kc->rows = malloc(a->kh * sizeof(int32_t *));
    kc->zeros = calloc(a->wo, sizeof(int32_t));
    kc->scale = malloc(a->wo * sizeof(float));
    kc->gain = malloc(a->wo * sizeof(float));
    for (int64_t s = 0; s < kc->slots; s++)
        kc->tag[s] = -1, kc->age[s] = 0;
}

static void cache_free(key_cache *kc) {
    free(kc->tag);
    free(kc->age);
    free(kc->keys);
    free(kc->pixel);
    free(kc->rows);
    free(kc->zeros);
    free(kc->scale);
    free(kc->gain);
}

/* the window keys of input row iy of image img (least recently used slot replaced) */
static const int32_t *row_keys(const mvm_args *restrict a, key_cache *kc, int64_t img,
                               int64_t iy) {
    const int64_t tag = img * a->h + iy;
    int64_t victim = 0;
    for (int64_t s = 0; s < kc->slots; s++) {
        if (kc->tag[s] == tag) {
            kc->age[s] = ++kc->clock;
            return kc->keys + s * a->wo;
        }
        if (kc->age[s] < kc->age[victim])
            victim = s;
    }
    const int64_t cc = a->c1 - a->c0;
    const float *row = a->x + (img * a->h + iy) * a->w * a->c + a->c0;
    /* rows are reduced in order: fetch the one two rows on while this one is worked on (the
       hardware prefetcher alone leaves the kernel waiting on memory, up to a fifth of its
       time on ResNet-20's large layers); past the input's end this fetches nothing */
    for (int64_t i = 0; i < a->w * a->c; i += 16)
        __builtin_prefetch(row + 2 * a->w * a->c - a->c0 + i);
    for (int64_t ix = 0; ix < a->w; ix++)
        kc->pixel[ix] = max_key(row + ix * a->c, cc, a->nm);
    int32_t *keys = kc->keys + victim * a->wo;
    for (int64_t ox = 0; ox < a->wo; ox++) {
        const int64_t ix0 = ox * a->sw - a->pw;
        int32_t best = ix0 < 0 || ix0 + a->kw > a->w ? 0 : INT32_MIN;
        for (int64_t kx = 0; kx < a->kw; kx++)
            if (ix0 + kx >= 0 && ix0 + kx < a->w)
                best = kc->pixel[ix0 + kx] > best ? kc->pixel[ix0 + kx] : best;
        keys[ox] = best;
    }
    kc->tag[victim] = tag;
    kc->age[victim] = ++kc->clock;
    return keys;
}

/* The factor that takes the row to DAC levels: 1 / (nm x reduction x step). When the
   row's (abs-)max element lands on a half level (a rounding tie in every row), the level it
   rounds to depends on the float arithmetic: aihwkit's decides (scale by 1/nm/reduction,
   then divide by the step), so the factor is nudged by an ulp or two until that element
   rounds as in aihwkit. */
static float dac_gain(const mvm_args *restrict a, float nm) {
    float gain = 1.0f / (nm * a->red_step);
    if (!a->tie_fix)
        return gain;
    const float want = __builtin_rintf(nm * ((1.0f / nm) / a->reduction) / a->inp_step);
    for (int i = 0; i < 8; i++) {
        const float got = __builtin_rintf(nm * gain);
        if (got == want)
            break;
        gain = __builtin_nextafterf(gain, got > want ? 0.0f : __builtin_inff());
    }
    return gain;
}

/* The noise-management scales and DAC gains of output row (img, oy), for every ox at once
   (a row of patches shares its input rows): the max over the kh input rows' window keys,
   back to a float; a zero (or, for max, negative) scale becomes 1, as in aihwkit. */
static void row_setup(const mvm_args *restrict a, key_cache *kc, int64_t img, int64_t oy,
                      int *nonzero) {
    const int64_t iy0 = oy * a->sh - a->ph;
    for (int64_t ky = 0; ky < a->kh; ky++) {
        const int64_t iy = iy0 + ky;
        kc->rows[ky] = iy < 0 || iy >= a->h ? kc->zeros : row_keys(a, kc, img, iy);
    }
    kc->img = img;
    kc->oy = oy;
    int any = 0;
    for (int64_t ox = 0; ox < a->wo; ox++) {
        int32_t best = INT32_MIN;
        for (int64_t ky = 0; ky < a->kh; ky++) {
            const int32_t key = kc->rows[ky][ox];
            best = key > best ? key : best;
        }
        best = best >= 0 ? best : best ^ 0x7FFFFFFF;
        float nm;
        memcpy(&nm, &best, 4);
        any |= nm != 0.0f;
        kc->scale[ox] = nm > 0.0f ? nm : 1.0f;
    }
    *nonzero |= any;
    for (int64_t ox = 0; ox < a->wo; ox++)
        kc->gain[ox] = dac_gain(a, kc->scale[ox]);
}

/* dst[0:len] = DAC(src[0:len] * inv) */
static inline void run_dac(const mvm_args *restrict a, float *restrict dst,
                           const float *restrict src, int64_t len, float inv) {
    int64_t i = 0;
    for (; i + VEC <= len; i += VEC) {
        vf v = vload(src + i) * inv;
        if (a->inp_round)
            v = vrint(v);
        if (a->clamp_input)
            v = vclamp(v, a->inp_lim);
        vstore(dst + i, v);
    }
    for (; i < len; i++) {
        float v = src[i] * inv;
        if (a->inp_round)
            v = __builtin_rintf(v);
        if (a->clamp_input)
            v = v > a->inp_lim ? a->inp_lim : v < -a->inp_lim ? -a->inp_lim : v;
        dst[i] = v;
    }
}

/* the row of the unfolded input at p, times its DAC gain and quantised, into dst */
static void load_row(const mvm_args *restrict a, pos_t p, float inv, float *restrict dst) {
    const int64_t cc = a->c1 - a->c0, run = a->kw * cc;
    const int64_t ix0 = p.ox * a->sw - a->pw, iy0 = p.oy * a->sh - a->ph;
    const int inside = ix0 >= 0 && ix0 + a->kw <= a->w && cc == a->c;
    const float *base = a->x + (p.img * a->h * a->w) * a->c + a->c0;
    for (int64_t ky = 0; ky < a->kh; ky++) {
        float *d = dst + ky * run;
        const int64_t iy = iy0 + ky;
        if (iy < 0 || iy >= a->h) {
            memset(d, 0, run * sizeof(float));
            continue;
        }
        const float *src = base + (iy * a->w + ix0) * a->c;
        if (inside) { /* kw whole pixels: one contiguous run */
            run_dac(a, d, src, run, inv);
            continue;
        }
        for (int64_t kx = 0; kx < a->kw; kx++) {
            if (ix0 + kx >= 0 && ix0 + kx < a->w)
                run_dac(a, d + kx * cc, src + kx * a->c, cc, inv);
            else
                memset(d + kx * cc, 0, cc * sizeof(float));
        }
    }
}

/* ---- the product and the output -------------------------------------------------------- */

/* acc[r][v] = sum_i q[r * kpad + i] * wt[i * npad + v * VEC + 0:VEC], r < ROWS, v < NV:
   the GEMM micro-kernel on NV (1 or 2) vectors of columns */
#define MICRO(NAME, NV)                                                                    \
    static inline void NAME(const float *restrict q, int64_t k, int64_t kpad,              \
                            const float *restrict wt, int64_t npad,                        \
                            vf acc[ROWS][WIDE * CV]) {                                     \
        vf s0[ROWS], s1[ROWS];                                                             \
        for (int r = 0; r < ROWS; r++)                                                     \
            s0[r] = s1[r] = (vf){0};                                                       \
        for (int64_t i = 0; i < k; i++) {                                                  \
            vf w0 = vload(wt + i * npad), w1 = NV > 1 ? vload(wt + i * npad + VEC) : w0;   \
            IN_REGISTER(w0);                                                               \
            if (NV > 1)                                                                    \
                IN_REGISTER(w1);                                                           \
            for (int r = 0; r < ROWS; r++) {                                               \
                float qi = q[r * kpad + i];                                                \
                s0[r] += qi * w0;                                                          \
                if (NV > 1)                                                                \
                    s1[r] += qi * w1;                                                      \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < ROWS; r++) {                                                   \
            acc[r][0] = s0[r];                                                             \
            if (NV > 1)                                                                    \
                acc[r][1] = s1[r];                                                         \
        }                                                                                  \
    }
MICRO(micro1, 1)
MICRO(micro2, 2)

/* noise, ADC, bound, rescale and bias for one row's COLS columns from c0; returns whether
   an output clipped */
static inline int finish(const mvm_args *restrict a, const vf acc[CV], const float *noise,
                         float scale, int64_t c0, float *restrict y) {
    vi clip = {0};
    vf out[CV];
    for (int h = 0; h < CV; h++) {
        vf z = acc[h];
        if (a->out_noise > 0.0f)
            z += a->out_noise * vload(noise + h * VEC);
        if (a->out_round)
            z = vrint(z);
        /* aihwkit tests the quantised outputs, levels x step in float, against the bound */
        vf phys = z * a->out_step;
        clip |= (phys > a->out_bound) | (phys < -a->out_bound);
        z = vclamp(z, a->out_lim);
        out[h] = vload(a->bias + c0 + h * VEC) + z * (scale * vload(a->col_scale + c0 + h * VEC));
        if (a->post_scale) {
            out[h] = vfma(out[h], vload(a->post_scale + c0 + h * VEC),
                          vload(a->post_shift + c0 + h * VEC));
        }
    }
    const int64_t nc = a->nout - c0;
    if (nc >= COLS) {
        for (int h = 0; h < CV; h++)
            vstore(y + h * VEC, out[h]);
    } else {
        float tmp[COLS];
        memcpy(tmp, out, sizeof tmp);
        memcpy(y, tmp, nc * sizeof(float));
    }
    int any = 0;
    for (int i = 0; i < VEC; i++)
        any |= clip[i];
    return any != 0;
}

/* One pass of the MVM over every row. Returns bit 0: some output clipped at the ADC bound;
   bit 1: some input row had a nonzero noise-management scale (always, without noise
   management: aihwkit skips the MVM only when every scale is zero). */
int hwsim_mvm(const mvm_args *restrict a) {
    const int64_t rows = a->n * a->ho * a->wo, panels = (rows + PANEL - 1) / PANEL;
    const int64_t k = a->k, kpad = (k + 15) / 16 * 16, npad = a->npad;
    const int noisy = a->out_noise > 0.0f;
    const float plain_gain = dac_gain(a, 1.0f); /* the DAC gain without noise management */
    int clipped = 0, nonzero = 0;
    volatile int stop = 0;
#pragma omp parallel reduction(| : clipped, nonzero)
    {
        float *buf = aligned_alloc(64, PANEL * kpad * sizeof(float));
        float *noise = aligned_alloc(64, PANEL * npad * sizeof(float));
        vf acc[ROWS][WIDE * CV];
        float scales[PANEL];
        key_cache kc;
        cache_init(a, &kc);
        memset(buf, 0, PANEL * kpad * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++) {
            if (stop)
                continue;
            const int64_t r0 = p * PANEL, nr = rows - r0 < PANEL ? rows - r0 : PANEL;
            pos_t pos = row_pos(a, r0);
            for (int64_t r = 0; r < nr; r++, next_pos(a, &pos)) {
                if (a->nm && (pos.img != kc.img || pos.oy != kc.oy))
                    row_setup(a, &kc, pos.img, pos.oy, &nonzero);
                const float nm = a->nm ? kc.scale[pos.ox] : 1.0f;
                scales[r] = nm * a->reduction;
                load_row(a, pos, a->nm ? kc.gain[pos.ox] : plain_gain, buf + r * kpad);
            }
            if (noisy && a->noise_in) {
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t j = 0; j < npad; j++)
                        noise[r * npad + j] = j < a->nout ? a->noise_in[(r0 + r) * a->nout + j]
                                                          : 0.0f;
            } else if (noisy) {
                normals(noise, r0 * npad, PANEL * npad, a->seed);
            }
            for (int64_t c0 = 0; c0 < npad;) {
                const int nb = WIDE > 1 && npad - c0 >= WIDE * COLS ? WIDE : 1;
                for (int64_t rb = 0; rb < nr; rb += ROWS) {
                    if (nb * CV == 2)
                        micro2(buf + rb * kpad, k, kpad, a->wt + c0, npad, acc);
                    else
                        micro1(buf + rb * kpad, k, kpad, a->wt + c0, npad, acc);
                    for (int64_t r = rb; r < rb + ROWS && r < nr; r++)
                        for (int b = 0; b < nb; b++)
                            clipped |= finish(a, acc[r - rb] + b * CV,
                                              noise + r * npad + c0 + b * COLS, scales[r],
                                              c0 + b * COLS,
                                              a->y + (r0 + r) * a->y_stride + c0 + b * COLS);
                }
                c0 += nb * COLS;
            }
            if (clipped && a->stop_on_clip)
                stop = 1;
        }
        free(buf);
        free(noise);
        cache_free(&kc);
    }
    return clipped | ((nonzero || !a->nm) << 1);
}

/* An eval-mode BatchNorm as one affine per channel, computed as torch's CPU kernel computes
   it (batch_norm_cpu_collect_linear_and_constant_terms): alpha = 1 / sqrt(var + eps) * weight,
   beta = bias - mean * alpha (one rounding); weight / bias NULL: 1 / 0. */
void hwsim_bn_affine(int64_t n, const float *mean, const float *var, const float *weight,
                     const float *bias, float eps, float *alpha, float *beta) {
    for (int64_t i = 0; i < n; i++) {
        const float invstd = 1.0f / __builtin_sqrtf(var[i] + eps);
        alpha[i] = invstd * (weight ? weight[i] : 1.0f);
        beta[i] = __builtin_fmaf(-mean[i], alpha[i], bias ? bias[i] : 0.0f);
    }
}

/* y = fma(x, alpha, beta) over rows of c channels (rows, c contiguous), with the kernel's
   own vector arithmetic: what an absorbed BN computes, for comparing it with torch's */
void hwsim_affine(const float *x, int64_t rows, int64_t c, const float *alpha,
                  const float *beta, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t j = 0;
        for (; j + VEC <= c; j += VEC)
            vstore(y + r * c + j, vfma(vload(x + r * c + j), vload(alpha + j), vload(beta + j)));
        for (; j < c; j++)
            y[r * c + j] = __builtin_fmaf(x[r * c + j], alpha[j], beta[j]);
    }
}

/* normals first .. first + n - 1 of the seed's stream (multiples of 32), for tests */
void hwsim_normals(float *out, int64_t first, int64_t n, uint64_t seed) {
    normals(out, first, n, seed);
}
