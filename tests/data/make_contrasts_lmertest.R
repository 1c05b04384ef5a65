#!/usr/bin/env Rscript
## Reference contrast matrices of lmerTest's anova(m, type = 1, 2, 3) for tests/test_contrasts.py.
##
## Usage (from the repository root):
##   Rscript tests/data/make_contrasts_lmertest.R
##
## Writes
##   tests/data/contrasts_sim.csv        a small unbalanced simulated data set (made here once, with a
##                                       fixed seed; numbers rounded to 4 decimals so the CSV is exact)
##   tests/data/contrasts_lmertest.json  per model: R's fixed-effect column names, term labels, and for
##                                       each type the matrices of show_tests(anova(m, type = k)) with
##                                       their row and column names, plus lmerTest's F table
## The models are fitted with lmerTest::lmer from the CSV as read back, so R and Python see the same
## numbers. jsonlite writes with digits = NA (full precision).

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})

data_dir <- file.path("tests", "data")
csv_path <- file.path(data_dir, "contrasts_sim.csv")

if (!file.exists(csv_path)) {
  set.seed(20240611)
  n <- 96
  sim <- data.frame(
    g = sprintf("g%02d", sample(1:12, n, replace = TRUE)),
    f3 = sample(c("a", "b", "c"), n, replace = TRUE, prob = c(0.5, 0.3, 0.2)),
    f2 = sample(c("hi", "lo"), n, replace = TRUE, prob = c(0.65, 0.35)),
    x = round(rnorm(n, mean = 2, sd = 1.5), 4),
    z = round(runif(n, -1, 1), 4),
    stringsAsFactors = FALSE
  )
  geff <- setNames(rnorm(12, sd = 0.8), sprintf("g%02d", 1:12))
  eff3 <- c(a = 0, b = 0.7, c = -0.4)
  eff2 <- c(hi = 0, lo = 0.5)
  sim$y <- round(1 + eff3[sim$f3] + eff2[sim$f2] + 0.3 * sim$x - 0.2 * sim$z +
    0.25 * sim$x * (sim$f3 == "b") + 0.4 * (sim$f3 == "c") * (sim$f2 == "lo") +
    geff[sim$g] + rnorm(n, sd = 0.6), 4)
  write.csv(sim, csv_path, row.names = FALSE)
}

sim <- read.csv(csv_path, stringsAsFactors = TRUE)
sim$x2 <- 2 * sim$x + 1 # collinear with the intercept and x: lme4 drops it
sim_missing <- droplevels(subset(sim, !(f3 == "c" & f2 == "lo"))) # one empty cell of f3 x f2

data("cake", package = "lme4")
data("sleepstudy", package = "lme4")

## name, data, formula in R (the test turns ^ into **)
cases <- list(
  list(name = "cake", data = "cake", formula = "angle ~ recipe * temp + (1|recipe:replicate)"),
  list(name = "sleep_linear", data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)"),
  list(name = "sleep_quadratic", data = "sleepstudy", formula = "Reaction ~ Days + I(Days^2) + (1|Subject)"),
  list(name = "sim_threeway", data = "sim", formula = "y ~ f3 * f2 * x + (1|g)"),
  list(name = "sim_main_and_slope", data = "sim", formula = "y ~ f3 * x + f2 + (1|g)"),
  list(name = "sim_nested_slopes", data = "sim", formula = "y ~ f3 + f3:x + (1|g)"),
  list(name = "sim_no_intercept", data = "sim", formula = "y ~ 0 + f3 * x + (1|g)"),
  list(name = "sim_missing_cell", data = "sim_missing", formula = "y ~ f3 * f2 + z + (1|g)"),
  list(name = "sim_collinear", data = "sim", formula = "y ~ x + x2 + f2 + (1|g)"),
  list(name = "sim_numeric", data = "sim", formula = "y ~ x * z + (1|g)"),
  list(name = "sim_sum_coded", data = "sim", formula = "y ~ C(f3, contr.sum) * x + (1|g)"),
  ## formulaic's columns differ from R's for these two: R's model matrix is stored (store_X)
  list(name = "sim_cells_only", data = "sim", formula = "y ~ x + f2:f3 + (1|g)", store_X = TRUE),
  list(name = "sim_slopes_no_intercept", data = "sim", formula = "y ~ 0 + x + x:f3 + (1|g)", store_X = TRUE),
  list(name = "sim_intercept_only", data = "sim", formula = "y ~ 1 + (1|g)"),
  list(name = "sim_single_no_intercept", data = "sim", formula = "y ~ 0 + x + (1|g)")
)

matrix_json <- function(L) {
  L <- as.matrix(L)
  list(
    nrow = nrow(L), ncol = ncol(L),
    rownames = I(if (is.null(rownames(L))) character(0) else rownames(L)),
    colnames = I(if (is.null(colnames(L))) character(0) else colnames(L)),
    values = unname(lapply(seq_len(nrow(L)), function(i) I(unname(L[i, ]))))
  )
}

out <- list()
for (case in cases) {
  dat <- get(case$data)
  m <- suppressMessages(lmerTest::lmer(as.formula(case$formula), data = dat, REML = TRUE))
  X <- model.matrix(m)
  types <- list()
  for (k in 1:3) {
    tab <- suppressMessages(anova(m, type = k))
    tests <- show_tests(tab)
    labels <- names(tests)
    types[[as.character(k)]] <- list(
      terms = I(if (is.null(labels)) rep("", length(tests)) else labels),
      matrices = unname(lapply(tests, matrix_json)),
      table = list(
        rownames = I(rownames(tab)),
        F = I(unname(tab[["F value"]])),
        NumDF = I(unname(tab[["NumDF"]]))
      )
    )
  }
  out[[case$name]] <- list(
    data = case$data,
    formula = case$formula,
    colnames_X = I(colnames(X)),
    term_labels = I(attr(terms(m), "term.labels")),
    beta = I(unname(fixef(m))),
    types = types
  )
  if (isTRUE(case$store_X)) out[[case$name]]$X <- matrix_json(X)
}

provenance <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  script = "tests/data/make_contrasts_lmertest.R",
  note = "show_tests(anova(m, type = k)) for k = 1, 2, 3; lmerTest::lmer REML fits"
)
writeLines(
  toJSON(list(provenance = provenance, cases = out), digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
  file.path(data_dir, "contrasts_lmertest.json")
)
cat("wrote", file.path(data_dir, "contrasts_lmertest.json"), "\n")
