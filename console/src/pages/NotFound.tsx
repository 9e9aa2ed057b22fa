import { Button, Result } from 'antd';
import { Link } from 'react-router-dom';
import { useI18n } from '../i18n';

export default function NotFound() {
  const { t } = useI18n();
  return <Result status="404" title={t('state.notFound.title')} subTitle={t('state.notFound.text')}
    extra={<Link to="/"><Button type="primary">{t('state.backHome')}</Button></Link>} />;
}
