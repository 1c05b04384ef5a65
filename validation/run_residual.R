#!/usr/bin/env Rscript
## nlme and glmmTMB references for lmer's residual structures (issue 21 items 2 and 3): dispformula = "~ f"
## (nlme's varIdent(form = ~ 1 | f), glmmTMB's dispformula = ~ f), corAR1(time, group) (nlme's
## corAR1(form = ~ t | g); glmmTMB's ar1(0 + tf | g) with dispformula = ~ 0 for a crossed design, which nlme
## cannot fit) and corCAR1(time, group) over real times (nlme's corCAR1(form = ~ t | g): a case's "car1" in
## place of "ar1"), for the cases in validation/residual_cases.json (data: validation/simulate_residual.py).
##
## Usage (from the repository root):
##   Rscript validation/run_residual.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_residual) at full precision with the R, nlme
## and glmmTMB versions and the call. Non-zero exit if any case failed.
##
## Per case: criterion -2 * logLik(m) (nlme's and glmmTMB's REML and ML constants equal lme4's: checked on
## y ~ x + (1 | g) without residual structure, all three 138.349 REML and 135.6145 ML), beta, sigma (the
## first level's residual SD), the per-level residual SDs `level_sd` (named by level), rho (corCAR1's Phi),
## and the SDs of the random effects `re_sd` (named by grouping factor).
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("nlme", "glmmTMB", "jsonlite")

args <- script_args(file.path("validation", "reference_residual"))
cases <- select_cases(fromJSON(file.path("validation", "residual_cases.json"), simplifyVector = FALSE), args$rest)

named <- function(x) as.list(setNames(as.numeric(x), names(x)))

run_nlme <- function(cs, data) {
  fixed <- as.formula(sub("\\+ \\(1 \\| subj\\)", "", cs$formula))
  weights <- if (is.null(cs$dispformula)) NULL else varIdent(form = as.formula(paste("~ 1 |", cs$dispformula)))
  cor_name <- if (!is.null(cs$car1)) "corCAR1" else if (!is.null(cs$ar1)) "corAR1" else NULL
  spec <- if (!is.null(cs$car1)) cs$car1 else cs$ar1
  cor_form <- if (is.null(spec)) NULL else sprintf("~ %s | %s", spec$time, spec$group)
  cor <- if (is.null(spec)) NULL else get(cor_name)(form = as.formula(cor_form))
  ctrl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10)
  m <- lme(fixed, random = ~ 1 | subj, data = data, weights = weights, correlation = cor,
           method = if (isTRUE(cs$reml)) "REML" else "ML", control = ctrl)
  level_sd <- NULL
  if (!is.null(cs$dispformula)) level_sd <- named(m$sigma * coef(m$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE))
  rho <- if (is.null(cor)) NULL else as.numeric(coef(m$modelStruct$corStruct, unconstrained = FALSE))
  vc <- VarCorr(m)
  list(criterion = -2 * as.numeric(logLik(m)), beta = vec(fixef(m)), beta_names = I(names(fixef(m))),
       sigma = m$sigma, level_sd = level_sd, rho = rho, re_sd = list(subj = as.numeric(vc[1, "StdDev"])),
       corstruct_class = if (is.null(cor)) NULL else class(m$modelStruct$corStruct)[1],
       call = sprintf("lme(%s, random = ~ 1 | subj, weights = %s, correlation = %s, method = '%s', control = lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10))",
                      deparse(fixed), deparse(weights), if (is.null(cor)) "NULL" else sprintf("%s(form = %s)", cor_name, cor_form),
                      if (isTRUE(cs$reml)) "REML" else "ML"))
}

run_tmb <- function(cs, data) {
  form <- as.formula(if (is.null(cs$tmb_formula)) cs$formula else cs$tmb_formula)
  disp <- if (!is.null(cs$ar1)) ~ 0 else if (is.null(cs$dispformula)) ~ 1 else as.formula(paste("~", cs$dispformula))
  ctrl <- glmmTMBControl(optCtrl = list(rel.tol = 1e-12, eval.max = 1e4, iter.max = 1e4))
  m <- glmmTMB(form, data = data, dispformula = disp, REML = isTRUE(cs$reml), control = ctrl)
  vc <- VarCorr(m)$cond
  re_sd <- lapply(vc, function(v) as.numeric(attr(v, "stddev")[1]))
  level_sd <- NULL; rho <- NULL; sigma <- sigma(m)
  if (!is.null(cs$dispformula) && is.null(cs$ar1)) {
    bd <- fixef(m)$disp  # log residual variance by level (glmmTMB 1.1: gaussian dispersion is sigma^2)
    lev <- levels(data[[cs$dispformula]])
    lv <- c(bd[1], bd[1] + bd[-1]); level_sd <- named(setNames(sqrt(exp(lv)), lev)); sigma <- sqrt(exp(bd[1]))
  }
  if (!is.null(cs$ar1)) {
    ## the ar1 term is the last on its grouping factor (VarCorr names it "subj.1" beside the intercept's "subj")
    is_ar1 <- vapply(vc, function(v) identical(unname(names(attr(v, "blockCode"))), "ar1"), logical(1))
    ar <- vc[[which(is_ar1)]]
    sigma <- as.numeric(attr(ar, "stddev")[1]); rho <- attr(ar, "correlation")[2, 1]
    re_sd <- re_sd[!is_ar1]
  }
  list(criterion = -2 * as.numeric(logLik(m)), beta = vec(fixef(m)$cond), beta_names = I(names(fixef(m)$cond)),
       sigma = sigma, level_sd = level_sd, rho = rho, re_sd = re_sd,
       converged = m$fit$convergence == 0, pdHess = isTRUE(m$sdr$pdHess),
       call = sprintf("glmmTMB(%s, data, dispformula = %s, REML = %s, control = glmmTMBControl(optCtrl = list(rel.tol = 1e-12, eval.max = 1e4, iter.max = 1e4)))",
                      deparse(form), deparse(disp), if (isTRUE(cs$reml)) "TRUE" else "FALSE"))
}

run_case <- function(cs) {
  data <- load_data(cs$data)
  out <- if (cs$engine == "nlme") run_nlme(cs, data) else run_tmb(cs, data)
  c(list(id = cs$id, engine = cs$engine, formula = cs$formula, reml = isTRUE(cs$reml)), out,
    list(r_version = R.version.string, nlme_version = as.character(packageVersion("nlme")),
         glmmTMB_version = as.character(packageVersion("glmmTMB"))))
}

run_cases(cases, run_case, args$out_dir, function(res, seconds) {
  sprintf("%-24s criterion %.10f  sigma %.6f  (%.1f s)", res$id, res$criterion, res$sigma, seconds)
})
