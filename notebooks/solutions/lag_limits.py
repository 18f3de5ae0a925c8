"""Solution to notebook 04's third exercise: the lags a k-layer ECP copies fully, and from where it guesses."""


def lag_limits(k, m):
    # target i + 1 copies token i + 1 - lag; row i sees m * (i // m - k) at the worst (the first row of its half
    # segment sees exactly k half segments back), so every copy lies in the field while lag - 1 <= k m, and none
    # does once lag - 1 >= (k + 1) m (even the last row of a half segment sees only k m + m - 1 back)
    return k * m + 1, (k + 1) * m + 1
