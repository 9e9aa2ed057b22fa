// The designed states of a page: no permission, a feature whose API is not there yet, the server
// unreachable, any other error (with its code), and an empty result.
import { Button, Empty, Result, Typography } from 'antd';
import { Link } from 'react-router-dom';
import { ApiError } from '../api';
import { useI18n } from '../i18n';

export function NoPermission() {
  const { t } = useI18n();
  return (
    <div data-testid="no-permission">
      <Result
        status="403"
        title={t('state.forbidden.title')}
        subTitle={t('state.forbidden.text')}
        extra={<Link to="/"><Button type="primary">{t('state.backHome')}</Button></Link>}
      />
    </div>
  );
}

export function errorText(t: ReturnType<typeof useI18n>['t'], label: ReturnType<typeof useI18n>['label'], err: ApiError): string {
  const known = label('error', err.code);
  const title = known !== err.code ? known : t('state.error.title');
  return err.message ? `${title}（${err.code}）：${err.message}` : `${title}（${err.code}）`;
}

export function ErrorState({ error, onRetry }: { error: ApiError; onRetry?: () => void }) {
  const { t, label } = useI18n();
  if (error.status === 403) return <NoPermission />;
  if (error.code === 'endpoint_missing') {
    return (
      <div data-testid="endpoint-missing"><Result status="404" title={t('state.missing.title')} subTitle={t('state.missing.text')} /></div>
    );
  }
  const network = error.code === 'network_error';
  return (
    <div data-testid="error-state"><Result
      status={network ? 'warning' : 'error'}
      title={network ? t('state.network.title') : t('state.error.title')}
      subTitle={<Typography.Text type="secondary">{network ? t('state.network.text') : errorText(t, label, error)}</Typography.Text>}
      extra={onRetry ? <Button onClick={onRetry}>{t('action.retry')}</Button> : undefined}
    /></div>
  );
}

export function EmptyState({ text }: { text?: string }) {
  const { t } = useI18n();
  return <Empty image={Empty.PRESENTED_IMAGE_SIMPLE} description={text ?? t('state.empty')} />;
}
