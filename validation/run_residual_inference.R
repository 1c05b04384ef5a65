#!/usr/bin/env Rscript
## nlme references for the Wald intervals of a residual structure's parameters (issue 21 item 5): the cases of
## validation/residual_inference_cases.json (data: validation/simulate_residual.py).
##
## Usage (from the repository root):
##   Rscript validation/run_residual_inference.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_residual_inference) at full precision (jsonlite
## digits = NA) with the R and nlme versions and the call. Non-zero exit if any case failed.
##
## Per case: lme(fixed, random = ~ 1 | subj, weights = varIdent(form = ~ 1 | f), correlation = corAR1(form = ~ t |
## subj) or corCAR1(...), method = REML/ML) with tight tolerances, then intervals(m, which = "var-cov") — nlme's
## Wald intervals from its apVar (the inverse Hessian of the (restricted) log-likelihood in the unconstrained
## parameters: log SD of the random effect, corAR1's log((1 + Phi) / (1 - Phi)) (= 2 atanh), corCAR1's logit,
## varIdent's log SD ratios, log sigma):
##   re         lower / est / upper of sd((Intercept))
##   phi        lower / est / upper of Phi1 (corAR1) or Phi (corCAR1)
##   ratios     per level other than the reference: lower / est / upper of the SD ratio to the reference level
##   sigma      lower / est / upper of the within-group standard error (the reference level's residual SD)
## nlme's Hessian (fdHess) steps by .relStep times max(|par|, minAbsParApVar = 0.05); its default .relStep,
## eps^(1/3) = 6e-6, is below the rounding noise of a criterion of ~600 (steps of 3e-7 on a log SD near 0), and
## its intervals move by up to 2e-2 relative with the step (ar1_gaps_ml's sd((Intercept)): [0.7343, 1.4828] at the
## default, [0.74752, 1.45663] at 1e-4, [0.74756, 1.45656] at 1e-3; a dense numpy Hessian of the same likelihood
## gives [0.747563, 1.456534]), so the references use .relStep = 1e-4.
## varIdent's reference level is the first one nlme meets in the data; the row of the first level (sorted, as
## sparselmm's reference) is moved to the top so that both report ratios to the same level (the fit is the same:
## the log-likelihood is recorded to check).
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("nlme", "jsonlite")

args <- script_args(file.path("validation", "reference_residual_inference"))
cases <- select_cases(fromJSON(file.path("validation", "residual_inference_cases.json"), simplifyVector = FALSE),
                      args$rest)

triple <- function(M, r) list(lower = M[r, "lower"], est = M[r, "est."], upper = M[r, "upper"])

run_case <- function(cs) {
  data <- load_data(cs$data)
  if (!is.null(cs$dispformula)) {
    f <- data[[cs$dispformula]]
    i <- which(f == levels(f)[1])[1]
    data <- rbind(data[i, ], data[-i, ])
  }
  fixed <- as.formula(sub("\\+ \\(1 \\| subj\\)", "", cs$formula))
  weights <- if (is.null(cs$dispformula)) NULL else varIdent(form = as.formula(paste("~ 1 |", cs$dispformula)))
  cor_name <- if (!is.null(cs$car1)) "corCAR1" else if (!is.null(cs$ar1)) "corAR1" else NULL
  spec <- if (!is.null(cs$car1)) cs$car1 else cs$ar1
  cor_form <- if (is.null(spec)) NULL else sprintf("~ %s | %s", spec$time, spec$group)
  cor <- if (is.null(spec)) NULL else get(cor_name)(form = as.formula(cor_form))
  ctrl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10, .relStep = 1e-4)
  method <- if (isTRUE(cs$reml)) "REML" else "ML"
  m <- lme(fixed, random = ~ 1 | subj, data = data, weights = weights, correlation = cor, method = method,
           control = ctrl)
  iv <- intervals(m, which = "var-cov")
  re <- iv$reStruct$subj
  out <- list(id = cs$id, formula = cs$formula, reml = isTRUE(cs$reml),
              criterion = -2 * as.numeric(logLik(m)),
              re = triple(re, 1), sigma = as.list(setNames(as.numeric(iv$sigma), c("lower", "est", "upper"))))
  if (!is.null(cor)) out$phi <- triple(iv$corStruct, 1)
  if (!is.null(weights)) {
    V <- iv$varStruct
    out$ratios <- lapply(setNames(rownames(V), rownames(V)), function(r) triple(V, r))
  }
  out$call <- sprintf("intervals(lme(%s, random = ~ 1 | subj, weights = %s, correlation = %s, method = '%s', control = lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10, .relStep = 1e-4)), which = 'var-cov')",
                      deparse(fixed), if (is.null(weights)) "NULL" else sprintf("varIdent(form = ~ 1 | %s)", cs$dispformula), if (is.null(cor)) "NULL" else sprintf("%s(form = %s)", cor_name, cor_form), method)
  c(out, list(r_version = R.version.string, nlme_version = as.character(packageVersion("nlme"))))
}

run_cases(cases, run_case, args$out_dir, function(res, seconds) {
  sprintf("%-20s criterion %.10f  sigma [%.6f, %.6f]  (%.1f s)", res$id, res$criterion, res$sigma$lower,
          res$sigma$upper, seconds)
})
