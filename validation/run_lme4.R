#!/usr/bin/env Rscript
## Reference results from R's lme4 for the cases in validation/cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_lme4.R [--out DIR] [--skip-slow] [case_id ...]
##
## With no case ids every case is run. Each case writes DIR/<id>.json
## (default DIR = validation/reference). A failing case is reported and the
## remaining cases still run; the exit status is non-zero if any case failed.

## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "jsonlite")

args <- script_args(file.path("validation", "reference"), c(skip_slow = "--skip-slow"))
out_dir <- args$out_dir
cases <- select_cases(fromJSON(file.path("validation", "cases.json"), simplifyVector = FALSE), args$rest,
                      args$skip_slow)

lme4_version <- utils::packageDescription("lme4")$Version

## make newdata columns match the training column types; grouping levels not
## seen in training (e.g. "NEW") are kept as extra factor levels
align_newdata <- function(nd, train) {
  for (col in intersect(names(nd), names(train))) {
    tr <- train[[col]]
    if (is.factor(tr)) {
      v <- as.character(nd[[col]])
      nd[[col]] <- factor(v, levels = union(levels(tr), unique(v)),
                          ordered = is.ordered(tr))
    } else if (is.numeric(tr)) {
      nd[[col]] <- as.numeric(nd[[col]])
    }
  }
  nd
}

cond_sd <- function(re_g) {
  pv <- attr(re_g, "postVar")
  if (is.null(pv)) pv <- attr(re_g, "condVar")
  if (is.null(pv)) return(NULL)
  if (!is.list(pv)) pv <- list(pv)
  ## one q x q x nlev array per term on this grouping factor
  sds <- do.call(cbind, lapply(pv, function(a) {
    t(apply(a, 3, function(s) sqrt(diag(as.matrix(s)))))
  }))
  if (nrow(re_g) == 1 && nrow(sds) != 1) sds <- t(sds)
  matrix(sds, nrow = nrow(re_g))
}

run_case <- function(cs) {
  data <- load_data(cs$data)
  reml <- isTRUE(cs$reml)

  msgs <- character(0)
  collect <- function(expr) withCallingHandlers(
    expr,
    warning = function(w) {
      msgs <<- c(msgs, paste0("warning: ", conditionMessage(w)))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, paste0("message: ", trimws(conditionMessage(m))))
      invokeRestart("muffleMessage")
    })

  m <- NULL
  tm <- system.time(
    collect(m <- lmer_case(cs, data))
  )
  conv_msgs <- m@optinfo$conv$lme4$messages
  if (length(conv_msgs)) msgs <- c(msgs, paste0("lme4 conv: ", conv_msgs))
  msgs <- unique(msgs)

  th <- getME(m, "theta")
  be <- fixef(m)
  V <- as.matrix(vcov(m))
  ll <- logLik(m)
  objective <- if (reml) {
    if (exists("REMLcrit", where = asNamespace("lme4"))) lme4::REMLcrit(m)
    else deviance(m, REML = TRUE)
  } else deviance(m)

  re <- ranef(m, condVar = TRUE)
  ranef_out <- list()
  for (g in names(re)) {
    rg <- re[[g]]
    sds <- cond_sd(rg)
    ranef_out[[g]] <- list(
      levels = I(rownames(rg)),
      columns = I(colnames(rg)),
      values = rows_of(as.matrix(rg)),
      condsd = if (is.null(sds)) NULL else rows_of(sds)
    )
  }

  n <- nobs(m)
  frows <- sort(unique(c(1L, 2L, 5L, 10L, n)))
  frows <- frows[frows <= n]
  fv <- fitted(m)

  pred <- NULL
  if (!is.null(cs$newdata)) {
    nd <- align_newdata(read.csv(cs$newdata, stringsAsFactors = TRUE), data)
    if (!is.null(cs$offset) && !(cs$offset %in% names(nd))) stop("newdata lacks offset column")
    pred <- list(
      re = vec(predict(m, newdata = nd, allow.new.levels = TRUE)),
      fixed = vec(predict(m, newdata = nd, re.form = NA))
    )
  }

  ## messages from building the deviance function repeat the fit's; drop them
  devfun <- suppressWarnings(suppressMessages(lmer_case(cs, data, devFunOnly = TRUE)))
  dev_out <- lapply(cs$theta_fixed, function(t) {
    t <- as.numeric(unlist(t))
    if (length(t) != length(th))
      stop(sprintf("theta_fixed has length %d, model theta has length %d", length(t), length(th)))
    list(theta = vec(t), value = as.numeric(devfun(t)))
  })

  dropped <- attr(getME(m, "X"), "col.dropped")

  list(
    id = cs$id,
    r_version = R.version.string,
    lme4_version = lme4_version,
    formula = cs$formula,
    reml = reml,
    objective = as.numeric(objective),
    theta = vec(th),
    theta_names = I(names(th)),
    theta_lower = vec(getME(m, "lower")),
    beta = vec(be),
    beta_names = I(names(be)),
    beta_dropped = I(if (is.null(dropped)) character(0) else names(dropped)),
    sigma = sigma(m),
    vcov = rows_of(V),
    se = vec(sqrt(diag(V))),
    loglik = as.numeric(ll),
    df = as.integer(attr(ll, "df")),
    nobs = as.integer(n),
    ngroups = as.list(ngrps(m)),
    singular = isSingular(m),
    messages = I(msgs),
    ranef = ranef_out,
    fitted_rows = I(as.integer(frows)),
    fitted = vec(fv[frows]),
    predict = pred,
    devfun = dev_out,
    fit_seconds = as.numeric(tm[["elapsed"]]),
    n_evals = as.integer(m@optinfo$feval)
  )
}

run_cases(cases, run_case, out_dir, function(res, seconds) {
  sprintf("ok     %-32s %6.2fs  objective=%.6f%s", res$id, seconds, res$objective,
          if (length(res$messages)) paste0("  [", paste(res$messages, collapse = " | "), "]") else "")
})
