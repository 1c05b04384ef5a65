#!/usr/bin/env Rscript
## Reference results from lme4's glmer for the cases in validation/glmm_cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_glmer.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_glmm), numbers at full precision
## (jsonlite digits = NA), with the R and lme4 versions. Non-zero exit if any case failed.
## Needs lme4, jsonlite, MASS (negative binomial) and numDeriv (the SE arbiter; skipped without it).
## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "jsonlite")
args <- script_args(file.path("validation", "reference_glmm"))
out_dir <- args$out_dir
cases <- select_cases(fromJSON(file.path("validation", "glmm_cases.json"), simplifyVector = FALSE), args$rest)

failed <- 0
for (cs in cases) {
  res <- tryCatch({
    d <- read.csv(cs$data, stringsAsFactors = TRUE)
    for (f in unlist(cs$factors)) d[[f]] <- factor(d[[f]])
    link <- if (is.null(cs$link)) NULL else cs$link
    fam <- switch(cs$family,
      binomial = if (is.null(link)) binomial() else binomial(link = link),
      poisson = if (is.null(link)) poisson() else poisson(link = link),
      negative.binomial = MASS::negative.binomial(theta = cs$theta, link = if (is.null(link)) "log" else link),
      Gamma = if (is.null(link)) Gamma() else Gamma(link = link),
      inverse.gaussian = if (is.null(link)) inverse.gaussian() else inverse.gaussian(link = link),
      stop("unknown family ", cs$family))
    d$.w <- if (is.null(cs$weights)) 1 else d[[cs$weights]]
    d$.off <- if (is.null(cs$offset)) 0 else d[[cs$offset]]
    warns <- character(0)
    t0 <- proc.time()[["elapsed"]]
    m <- withCallingHandlers(
      glmer(as.formula(cs$formula), data = d, family = fam, nAGQ = cs$nAGQ, weights = .w, offset = .off),
      warning = function(w) {
        warns <<- c(warns, conditionMessage(w))
        invokeRestart("muffleWarning")
      })
    elapsed <- proc.time()[["elapsed"]] - t0
    ## the same fit with PIRLS converged tightly: lme4's default tolPwrss = 1e-7 leaves its log|L|^2 one
    ## PIRLS step behind (the factor is at the weights before the last step), which moves the criterion
    ## by up to ~1e-3 and the finite-difference Hessian (hence the SEs) by ~1 %
    mt <- suppressWarnings(glmer(as.formula(cs$formula), data = d, family = fam, nAGQ = cs$nAGQ, weights = .w,
                                 offset = .off, control = glmerControl(tolPwrss = 1e-12)))
    ## lme4's reported criterion comes from its last PIRLS state, not the exact Laplace value at its own
    ## estimates (for Gamma / inverse Gaussian it can be below it): evaluate the tight-PIRLS deviance
    ## function at the default fit's parameters, which is what "no worse than lme4" is checked against
    dfun <- suppressWarnings(glmer(as.formula(cs$formula), data = d, family = fam, nAGQ = cs$nAGQ, weights = .w,
                                   offset = .off, control = glmerControl(tolPwrss = 1e-12), devFunOnly = TRUE))
    pars <- if (cs$nAGQ == 0) getME(m, "theta") else c(getME(m, "theta"), fixef(m))
    exact_at_default <- dfun(unname(pars))
    ## a third opinion on the SEs: Richardson-extrapolated Hessian (numDeriv) of the same exact deviance
    ## function at the tight optimum. lme4's own deriv12 Hessian can be noisy in either fit (sim_gamma_weights:
    ## the tight refit's has spurious theta-beta entries, SEs 20 % off the default fit's and this one);
    ## compare_glmm.py uses it only to decide between lme4's two fits where they disagree
    se_exact <- NULL
    if (cs$nAGQ > 0 && !isSingular(mt) && requireNamespace("numDeriv", quietly = TRUE)) {
      se_exact <- tryCatch({
        ntheta <- length(getME(mt, "theta"))
        H <- numDeriv::hessian(dfun, unname(c(getME(mt, "theta"), fixef(mt))))
        unname(sqrt(diag(2 * solve(H))[-seq_len(ntheta)]))
      }, error = function(e) NULL)
    }
    tight <- list(beta = unname(fixef(mt)), theta = unname(getME(mt, "theta")),
                  se = unname(sqrt(diag(as.matrix(vcov(mt))))), minus2loglik = -2 * as.numeric(logLik(mt)),
                  feval = mt@optinfo$feval, sigma = sigma(mt), se_exact = se_exact)
    ll <- logLik(m)
    re <- ranef(m, condVar = TRUE)
    re_out <- lapply(names(re), function(nm) {
      r <- re[[nm]]
      pv <- attr(r, "postVar")
      list(group = nm, levels = rownames(r), names = colnames(r),
           values = unname(as.list(as.data.frame(r))),
           cond_var_diag = if (length(dim(pv)) == 3) lapply(seq_len(dim(pv)[1]), function(j) pv[j, j, ]) else NULL)
    })
    list(
      id = cs$id, r_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
      beta = unname(fixef(m)), beta_names = names(fixef(m)), theta = unname(getME(m, "theta")),
      se = unname(sqrt(diag(as.matrix(vcov(m))))), vcov = unname(as.matrix(vcov(m))),
      minus2loglik = -2 * as.numeric(ll), loglik = as.numeric(ll), aic = AIC(m), bic = BIC(m),
      minus2loglik_exact = exact_at_default,
      sigma = sigma(m), family = family(m)$family, link = family(m)$link,
      varcorr = as.data.frame(VarCorr(m)),
      deviance = deviance(m), df_resid = df.residual(m), nobs = nobs(m),
      fitted_head = unname(head(fitted(m), 20)),
      resid_deviance_head = unname(head(residuals(m, type = "deviance"), 20)),
      resid_pearson_head = unname(head(residuals(m, type = "pearson"), 20)),
      ranef = re_out, singular = isSingular(m), warnings = warns,
      feval = m@optinfo$feval, seconds = elapsed, nAGQ = cs$nAGQ, tight = tight)
  }, error = function(e) {
    message("case ", cs$id, " failed: ", conditionMessage(e))
    NULL
  })
  if (is.null(res)) {
    failed <- failed + 1
    next
  }
  write_json(res, file.path(out_dir, paste0(cs$id, ".json")), digits = NA, auto_unbox = TRUE, null = "null")
  cat(sprintf("%-24s -2logL %.6f  %d evals  %.2fs\n", cs$id, res$minus2loglik, as.integer(res$feval), res$seconds))
}
if (failed > 0) quit(status = 1)
