#!/usr/bin/env Rscript
## Reference results from lmerTest (Satterthwaite) and pbkrtest (Kenward-Roger)
## for the cases in validation/inference_cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_lmertest.R [--out DIR] [--skip-slow] [--no-kr-cache] [case_id ...]
##
## With no case ids every case is run. Each case writes DIR/<id>.json
## (default DIR = validation/reference_inference). Warnings and messages are
## recorded per step in the JSON ("messages"); so are errors of single steps
## ("errors"). A case whose fit fails, or any step that errors, makes the exit
## status non-zero (the other cases still run).
##
## Besides lmerTest's own numbers each file holds "exact": the Satterthwaite
## building blocks computed here with analytic derivatives (no numDeriv) at
## lme4's theta, and lmerTest's tables recomputed from them. They measure how
## much of a difference to lmerTest is lmerTest's finite-difference error.
##
## pbkrtest::vcovAdj is a deterministic function of the fitted model, but
## lmerTest calls it again for every coefficient, contrast and anova term (each
## call forms and inverts the n x n marginal covariance). Unless --no-kr-cache
## is given, the result is memoised per case (keyed on the model's theta,
## sigma, beta and X), which changes no number and makes the set ~5x faster.

## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lmerTest", "pbkrtest", "jsonlite")

args <- script_args(file.path("validation", "reference_inference"),
                    c(skip_slow = "--skip-slow", no_kr_cache = "--no-kr-cache"))
out_dir <- args$out_dir
kr_cache <- !args$no_kr_cache
cases <- select_cases(fromJSON(file.path("validation", "inference_cases.json"), simplifyVector = FALSE),
                      args$rest, args$skip_slow)

versions <- list(
  r_version = R.version.string,
  lme4_version = utils::packageDescription("lme4")$Version,
  lmerTest_version = utils::packageDescription("lmerTest")$Version,
  pbkrtest_version = utils::packageDescription("pbkrtest")$Version,
  numDeriv_version = utils::packageDescription("numDeriv")$Version,
  Matrix_version = utils::packageDescription("Matrix")$Version
)

## ---- memoised pbkrtest::vcovAdj (see header) --------------------------------
.kr_memo <- new.env()
if (kr_cache) {
  orig_vcovAdj <- pbkrtest::vcovAdj
  memo_vcovAdj <- function(object, details = 0) {
    if (inherits(object, "merMod")) {
      key <- list(object@theta, sigma(object), object@beta, getME(object, "X"), getME(object, "is_REML"))
      if (!is.null(.kr_memo$key) && identical(.kr_memo$key, key)) return(.kr_memo$value)
      value <- orig_vcovAdj(object, details)
      .kr_memo$key <- key
      .kr_memo$value <- value
      return(value)
    }
    orig_vcovAdj(object, details)
  }
  utils::assignInNamespace("vcovAdj", memo_vcovAdj, ns = "pbkrtest")
}

## a data.frame (coefficient, contest or anova table) as named columns
cols_of <- function(tab) {
  tab <- as.data.frame(tab)
  out <- lapply(names(tab), function(nm) vec(tab[[nm]]))
  names(out) <- names(tab)
  out
}
T_COLS <- c("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)")
F_COLS <- c("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)")
t_table <- function(tab) cols_of(as.data.frame(tab)[, T_COLS, drop = FALSE])
f_table <- function(tab) cols_of(as.data.frame(tab)[, F_COLS, drop = FALSE])

## ---- analytic Satterthwaite building blocks ----------------------------------
## lmerTest's varpar = (theta, sigma); its deviance (devfun_vp) is, up to constants,
##   f = log|V| [+ log|X'V^-1 X|] + Q(theta)/sigma^2 + m log sigma^2,
## V = Z Lambda Lambda' Z' + W^-1, Q = (y - X beta(theta))' V^-1 (y - X beta(theta)),
## m = n (ML) or n - p (REML). With A = V^-1 (ML) or P (REML), V_i = Z M_i Z',
## M_i = dLambda_i Lambda' + Lambda dLambda_i', M_ij = dLambda_i dLambda_j' + dLambda_j dLambda_i',
## u = Z'P y:
##   f_ij = tr(A V_ij) - tr(A V_i A V_j) + (2 u'M_i Z'PZ M_j u - u'M_ij u)/sigma^2
##   f_i,sigma = 2 u'M_i u / sigma^3;  f_sigma,sigma = 6 Q/sigma^4 - 2 m/sigma^2
## and vcov(beta) = sigma^2 (X'V^-1 X)^-1 =: sigma^2 C0 has
##   d/dtheta_i = sigma^2 C0 X'V^-1 Z M_i Z'V^-1 X C0,  d/dsigma = 2 sigma C0.
## Everything is formed in q x q (Woodbury), so n does not matter, q does.
exact_blocks <- function(m, max_q = 2500) {
  Z <- getME(m, "Z")
  q <- ncol(Z)
  if (q > max_q) return(NULL)
  X <- getME(m, "X")
  n <- nrow(X)
  p <- ncol(X)
  Lt <- getME(m, "Lambdat")
  Lind <- getME(m, "Lind")
  theta <- getME(m, "theta")
  k <- length(theta)
  s <- sigma(m)
  reml <- isTRUE(getME(m, "is_REML"))
  w <- weights(m)
  y <- getME(m, "y") - getME(m, "offset")
  Lt@x <- theta[Lind]
  Lam <- as.matrix(t(Lt))
  dLam <- lapply(seq_len(k), function(i) {
    D <- Lt
    D@x <- as.numeric(Lind == i)
    as.matrix(t(D))
  })
  WZ <- w * Z
  ZtWZ <- as.matrix(crossprod(Z, WZ))
  ZtWX <- as.matrix(crossprod(WZ, X))
  XtWX <- crossprod(X, w * X)
  ZtWy <- as.numeric(crossprod(WZ, y))
  XtWy <- as.numeric(crossprod(X, w * y))
  ytWy <- sum(w * y * y)
  K <- Lam %*% solve(crossprod(Lam, ZtWZ %*% Lam) + diag(q), t(Lam))
  ZVZ <- ZtWZ - ZtWZ %*% K %*% ZtWZ
  ZVX <- ZtWX - ZtWZ %*% K %*% ZtWX
  XVX <- XtWX - crossprod(ZtWX, K %*% ZtWX)
  ZVy <- ZtWy - as.numeric(ZtWZ %*% (K %*% ZtWy))
  XVy <- XtWy - as.numeric(crossprod(ZtWX, K %*% ZtWy))
  yVy <- ytWy - sum(ZtWy * (K %*% ZtWy))
  C0 <- solve(XVX)
  beta <- as.numeric(C0 %*% XVy)
  Q <- yVy - sum(XVy * beta)
  mm <- if (reml) n - p else n
  u <- ZVy - as.numeric(ZVX %*% beta)
  ZPZ <- ZVZ - ZVX %*% C0 %*% t(ZVX)
  B <- if (reml) ZPZ else ZVZ
  M <- lapply(dLam, function(D) D %*% t(Lam) + Lam %*% t(D))
  BM <- lapply(M, function(Mi) B %*% Mi)
  PM <- lapply(M, function(Mi) ZPZ %*% Mi)
  Mu <- lapply(M, function(Mi) as.numeric(Mi %*% u))
  H <- matrix(0, k + 1, k + 1)
  for (i in seq_len(k)) {
    for (j in i:k) {
      Mij <- dLam[[i]] %*% t(dLam[[j]]) + dLam[[j]] %*% t(dLam[[i]])
      val <- sum(B * Mij) - sum(BM[[i]] * t(BM[[j]])) +
        (2 * sum(Mu[[i]] * as.numeric(ZPZ %*% Mu[[j]])) - sum(u * (Mij %*% u))) / s^2
      H[i, j] <- H[j, i] <- val
    }
    H[i, k + 1] <- H[k + 1, i] <- 2 * sum(u * Mu[[i]]) / s^3
  }
  H[k + 1, k + 1] <- 6 * Q / s^4 - 2 * mm / s^2
  ## lmerTest's pseudo-inverse rule (as_lmerModLT, tol = 1e-8)
  eh <- eigen(H, symmetric = TRUE)
  pos <- eh$values > 1e-8
  h_inv <- eh$vectors[, pos, drop = FALSE] %*% diag(1 / eh$values[pos], nrow = sum(pos)) %*%
    t(eh$vectors[, pos, drop = FALSE])
  jac <- c(
    lapply(M, function(Mi) s^2 * C0 %*% crossprod(ZVX, Mi %*% ZVX) %*% C0),
    list(2 * s * C0)
  )
  list(hessian = H, vcov_varpar = 2 * h_inv, jac = lapply(jac, function(J) unname(as.matrix(J))),
       vcov_beta = s^2 * C0, sigma_check = sqrt(Q / mm))
}

run_case <- function(cs) {
  data <- load_data(cs$data)
  reml <- isTRUE(cs$reml)
  kr <- isTRUE(cs$kr)
  rm(list = ls(.kr_memo), envir = .kr_memo)

  msgs <- list()
  errs <- list()
  ## run one step; record its warnings/messages (muffled) and an error (returns NULL)
  step <- function(where, expr) {
    withCallingHandlers(
      tryCatch(expr, error = function(e) {
        errs[[length(errs) + 1]] <<- list(where = where, message = conditionMessage(e))
        NULL
      }),
      warning = function(w) {
        msgs[[length(msgs) + 1]] <<- list(where = where, message = paste0("warning: ", conditionMessage(w)))
        invokeRestart("muffleWarning")
      },
      message = function(m) {
        msgs[[length(msgs) + 1]] <<- list(where = where, message = paste0("message: ", trimws(conditionMessage(m))))
        invokeRestart("muffleMessage")
      })
  }
  ## a KR table computed by lmerTest's silent fallback to Satterthwaite is no KR reference
  kr_fallback <- function(since = 0L) {
    new <- msgs[seq_along(msgs) > since]
    any(vapply(new, function(x) grepl("Unable to compute Kenward-Roger", x$message), logical(1)))
  }

  t_start <- proc.time()[["elapsed"]]
  m <- NULL
  tm_fit <- system.time(
    withCallingHandlers(
      m <- lmer_case(cs, data, lmer = lmerTest::lmer),
      warning = function(w) {
        msgs[[length(msgs) + 1]] <<- list(where = "fit", message = paste0("warning: ", conditionMessage(w)))
        invokeRestart("muffleWarning")
      },
      message = function(mm) {
        msgs[[length(msgs) + 1]] <<- list(where = "fit", message = paste0("message: ", trimws(conditionMessage(mm))))
        invokeRestart("muffleMessage")
      })
  )[["elapsed"]]
  if (!inherits(m, "lmerModLmerTest")) stop("lmerTest::lmer did not return an lmerModLmerTest (", class(m), ")")
  conv_msgs <- m@optinfo$conv$lme4$messages
  if (length(conv_msgs)) msgs <- c(msgs, lapply(conv_msgs, function(x) list(where = "fit", message = paste0("lme4 conv: ", x))))

  p <- length(m@beta)
  objective <- if (reml) lme4::REMLcrit(m) else deviance(m)

  out <- c(list(id = cs$id), versions, list(
    formula = cs$formula,
    reml = reml,
    kr = kr,
    weights = cs$weights,
    offset = cs$offset,
    nobs = nobs(m),
    fixef_names = I(colnames(getME(m, "X"))),
    beta = vec(m@beta),
    theta = vec(getME(m, "theta")),
    sigma = sigma(m),
    objective = as.numeric(objective),
    singular = isSingular(m),
    vcov_beta = rows_of(m@vcov_beta),
    vcov_varpar = rows_of(m@vcov_varpar),
    jac = lapply(m@Jac_list, rows_of)
  ))

  t0 <- proc.time()[["elapsed"]]
  out$coef_satterthwaite <- step("coef_satterthwaite", t_table(summary(m)$coefficients))
  if (kr) {
    n_msgs <- length(msgs)
    out$coef_kr <- step("coef_kr", t_table(summary(m, ddf = "Kenward-Roger")$coefficients))
    out$vcov_adj <- step("vcov_adj", rows_of(as.matrix(pbkrtest::vcovAdj(m))))
    if (kr_fallback(n_msgs)) errs[[length(errs) + 1]] <- list(where = "coef_kr", message = "lmerTest fell back to Satterthwaite")
  }

  ## exact (analytic) Satterthwaite blocks at lme4's theta, and lmerTest's tables recomputed from them
  ex <- step("exact", exact_blocks(m))
  m_exact <- NULL
  if (!is.null(ex)) {
    m_exact <- m
    m_exact@vcov_varpar <- ex$vcov_varpar
    m_exact@Jac_list <- ex$jac
    out$exact <- list(
      hessian = rows_of(ex$hessian),
      vcov_varpar = rows_of(ex$vcov_varpar),
      jac = lapply(ex$jac, rows_of),
      vcov_beta_max_rel_diff = max(abs(ex$vcov_beta - m@vcov_beta)) / max(abs(m@vcov_beta)),
      sigma_rel_diff = abs(ex$sigma_check - sigma(m)) / sigma(m),
      coef_satterthwaite = step("exact coef", t_table(summary(m_exact)$coefficients))
    )
  }

  out$contest <- lapply(seq_along(cs$contrasts), function(ci) {
    con <- cs$contrasts[[ci]]
    L <- do.call(rbind, lapply(con$L, function(r) as.numeric(unlist(r))))
    if (ncol(L) != p) stop(sprintf("contrast %d has %d columns, the model has %d fixed effects", ci, ncol(L), p))
    joint <- isTRUE(con$joint)
    tab <- if (joint) f_table else t_table
    run <- function(model, ddf, where) step(where, tab(contest(model, L, joint = joint, ddf = ddf, confint = FALSE)))
    res <- list(L = rows_of(L), joint = joint, rank = qr(L)$rank,
                satterthwaite = run(m, "Satterthwaite", sprintf("contest %d Satterthwaite", ci)))
    if (kr) {
      n_msgs <- length(msgs)
      res$kr <- run(m, "Kenward-Roger", sprintf("contest %d KR", ci))
      if (kr_fallback(n_msgs)) errs[[length(errs) + 1]] <<- list(where = sprintf("contest %d KR", ci),
                                                          message = "lmerTest fell back to Satterthwaite")
    }
    if (!is.null(m_exact)) res$satterthwaite_exact <- run(m_exact, "Satterthwaite", sprintf("contest %d exact", ci))
    res
  })

  out$anova <- list()
  for (type in unlist(cs$anova_types)) {
    key <- as.character(type)
    a_s <- step(sprintf("anova %s Satterthwaite", key), anova(m, type = type, ddf = "Satterthwaite"))
    entry <- list(terms = I(rownames(a_s)), satterthwaite = if (is.null(a_s)) NULL else f_table(a_s))
    tests <- step(sprintf("show_tests %s", key), show_tests(a_s))
    entry$tests <- lapply(tests, function(Lt) list(
      rownames = I(if (is.null(rownames(Lt))) character(0) else rownames(Lt)),
      colnames = I(colnames(Lt)),
      L = rows_of(Lt)
    ))
    if (kr) {
      n_msgs <- length(msgs)
      a_k <- step(sprintf("anova %s KR", key), anova(m, type = type, ddf = "Kenward-Roger"))
      if (!is.null(a_k)) {
        if (!identical(rownames(a_k), rownames(a_s))) stop("KR and Satterthwaite anova terms differ")
        entry$kr <- f_table(a_k)
      }
      if (kr_fallback(n_msgs)) errs[[length(errs) + 1]] <- list(where = sprintf("anova %s KR", key),
                                                               message = "lmerTest fell back to Satterthwaite")
    }
    if (!is.null(m_exact)) {
      a_e <- step(sprintf("anova %s exact", key), anova(m_exact, type = type, ddf = "Satterthwaite"))
      if (!is.null(a_e)) entry$satterthwaite_exact <- f_table(a_e)
    }
    out$anova[[key]] <- entry
  }

  ## lmerTest's ranova (issue 20): every row of the table; the reduced models are lmerTest's refits
  if (isTRUE(cs$ranova)) {
    r <- step("ranova", ranova(m))
    if (!is.null(r)) {
      out$ranova <- list(terms = I(rownames(r)), npar = r$npar, logLik = r$logLik, AIC = r$AIC,
                         LRT = r$LRT, Df = r$Df, p = r[["Pr(>Chisq)"]])
    }
  }

  ## unique messages, in order of first appearance
  keys <- vapply(msgs, function(x) paste(x$where, x$message), character(1))
  out$messages <- unname(msgs[!duplicated(keys)])
  out$errors <- unname(errs)
  out$fit_seconds <- as.numeric(tm_fit)
  out$inference_seconds <- proc.time()[["elapsed"]] - t0
  out$total_seconds <- proc.time()[["elapsed"]] - t_start
  out
}

run_cases(cases, run_case, out_dir, function(res, seconds) {
  msg <- vapply(res$messages, function(x) paste0(x$where, ": ", x$message), character(1))
  err <- vapply(res$errors, function(x) paste0(x$where, ": ", x$message), character(1))
  line <- sprintf("%s %-32s %6.2fs%s%s", if (length(err)) "ERROR " else "ok    ", res$id, seconds,
                  if (length(msg)) paste0("  [", paste(msg, collapse = " | "), "]") else "",
                  if (length(err)) paste0("  ERRORS: ", paste(err, collapse = " | ")) else "")
  structure(line, failed = length(err) > 0)
})
