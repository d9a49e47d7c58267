"""`cift bench NAME`: each engine measured against its reference in the same run (last line JSON).

One module per benchmark, beside nothing it measures: ifd, diversity, train, serve; `roofline`
is the matmul probe that `roofline_fraction` divides by.
"""
